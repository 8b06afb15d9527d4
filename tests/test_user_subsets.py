"""User subsets from the `wta` command: validation, materialisation, listing and removal.

Every test works on one copy of the smoke home. The subset `pair` is registered and
materialised once (the `pair` fixture); the removal test runs last and deletes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from tests.pipeline_fixtures import cli_env, copy_home, subprocess_env  # noqa: F401  (cli_env is a fixture)
from wta_core.config import get_preset
from wta_core.paths import WtaPaths
from wta_core.errors import ArtifactError
from wta_core.pipeline.adapters import plan_subset
from wta_core.pipeline.generation import load_trajectory
from wta_core.pipeline.user_subsets import get_user_subset
from wta_core.storage import TableStore
from wta_dagster.cli import USER_SUBSET_ASSETS, main

SMOKE = get_preset("smoke")
PAIR = ("chorale.00000", "fiddle.00001")
GENRES = ["chorale", "fiddle", "quartet"]
WTA = str(Path(sys.executable).with_name("wta"))
DAGSTER = str(Path(sys.executable).with_name("dagster"))


@pytest.fixture(scope="module")
def home(smoke_run, tmp_path_factory) -> Path:
    return copy_home(smoke_run, tmp_path_factory.mktemp("user_subsets") / "home")


@pytest.fixture(scope="module")
def pair(home, render_cache) -> subprocess.CompletedProcess:
    """`wta subsets add pair --tracks ... --materialize` run as a program."""
    completed = subprocess.run(
        [WTA, "subsets", "add", "pair", "--tracks", ",".join(PAIR), "--materialize", "--threads", "1", "--json"],
        env=subprocess_env(home, render_cache), capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def no_fiddle(home, render_cache) -> Path:
    """The user subset of every fiddle track, materialised with `dagster asset materialize`."""
    env = subprocess_env(home, render_cache)
    registered = subprocess.run([WTA, "subsets", "add", "no-fiddle", "--genre", "fiddle"], env=env,
                                capture_output=True, text=True, timeout=300)
    assert registered.returncode == 0, registered.stderr[-3000:]
    # The training resource keeps its default thread count, the one the main job trained with.
    completed = subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "wta_dagster", "--select", ",".join(USER_SUBSET_ASSETS),
         "--partition", "no-fiddle"], env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return home


def store(home: Path) -> TableStore:
    return TableStore(WtaPaths(home).database)


def add(*arguments: str) -> int:
    return main(["subsets", "add", *arguments])


# ---------------------------------------------------------------------------------------
# Invalid input


def test_add_rejects_unknown_tracks(cli_env, capsys):
    code = add("typo", "--tracks", "chorale.00000,nope.1,quartet.00099")
    error = capsys.readouterr().err
    assert code == 2
    assert "unknown track ids: nope.1, quartet.00099" in error
    assert get_user_subset(WtaPaths(cli_env), "typo") is None


@pytest.mark.parametrize("name", ["bad name", "../up", ".hidden", "a..b", "x" * 65, "tab\tname"])
def test_add_rejects_bad_name(cli_env, capsys, name):
    code = add(name, "--tracks", "chorale.00000")
    assert code == 2
    assert f"invalid subset name {name!r}" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["full", "chorale", "control-1", "dose-25", "noise"])
def test_add_rejects_builtin_name(cli_env, capsys, name):
    code = add(name, "--tracks", "chorale.00000")
    assert code == 2
    assert f"subset name {name!r} clashes with a built-in subset" in capsys.readouterr().err


def test_add_rejects_empty_subset(cli_env, capsys):
    code = add("nothing", "--path-pattern", "*.nomatch")
    assert code == 2
    assert "subset 'nothing' removes no track" in capsys.readouterr().err


def test_add_rejects_whole_dataset(cli_env, capsys):
    code = add("everything", "--path-pattern", "%")
    assert code == 2
    assert "removes all 24 tracks, which leaves nothing to train on" in capsys.readouterr().err


def test_add_rejects_unknown_genre(cli_env, capsys):
    code = add("jazz", "--genre", "jazz")
    assert code == 2
    assert "unknown genre 'jazz'; the dataset's genres are chorale, fiddle, quartet" in capsys.readouterr().err


def test_add_rejects_missing_ids_file(cli_env, capsys, tmp_path):
    code = add("listed", "--ids-file", str(tmp_path / "absent.txt"))
    assert code == 2
    assert f"cannot read ids file {tmp_path / 'absent.txt'}" in capsys.readouterr().err


def test_add_requires_one_definition(cli_env, capsys):
    with pytest.raises(SystemExit) as raised:
        add("both", "--genre", "fiddle", "--tracks", "chorale.00000")
    assert raised.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_add_rejects_duplicate_name(pair, cli_env, capsys):
    code = add("pair", "--genre", "fiddle")
    assert code == 2
    assert "a user subset named 'pair' already exists" in capsys.readouterr().err
    assert get_user_subset(WtaPaths(cli_env), "pair").removed == PAIR


# ---------------------------------------------------------------------------------------
# Registration and materialisation


def test_pair_subset_rows(pair, home):
    payload = json.loads(pair.stdout)
    assert payload["subset"]["tracks"] == list(PAIR)
    assert len(payload["runs"]) == 1
    subsets = store(home).read("SELECT * FROM user_subsets WHERE name = 'pair'")
    assert subsets.height == 1
    assert json.loads(subsets["definition"][0]) == {"tracks": list(PAIR)}
    assert subsets["members_removed"][0] == 2
    tracks = store(home).read("SELECT track_id FROM user_subset_tracks WHERE name = 'pair' ORDER BY track_id")
    assert tracks["track_id"].to_list() == list(PAIR)


def test_pair_adapter_is_controlled(pair, home):
    adapters = store(home).read_table("adapters")
    full = adapters.filter(pl.col("adapter_id") == "full").to_dicts()[0]
    adapter = adapters.filter(pl.col("adapter_id") == "subset-pair").to_dicts()[0]
    assert adapter["kind"] == "user"
    assert adapter["steps"] == full["steps"] == SMOKE.lora.steps
    assert adapter["seed"] == full["seed"]
    assert adapter["members"] == full["members"] - 2
    members = set(store(home).read_table("subset_members", {"subset_id": "subset-pair"})["track_id"].to_list())
    assert members.isdisjoint(PAIR)
    assert len(members) == full["members"] - 2


def test_pair_scores_calibrated(pair, home):
    scores = store(home).read("SELECT * FROM wta_scores WHERE adapter_id = 'subset-pair' AND target = 'latent'")
    assert scores.height == len(GENRES) * len(SMOKE.sample.seeds)
    assert np.isfinite(scores["score"].to_numpy()).all()
    assert np.isfinite(scores["z_score"].to_numpy()).all()
    controls = len(SMOKE.lora.control_seeds) * len(GENRES) * len(SMOKE.sample.seeds)
    assert set(scores["calibration"].to_list()) == {f"against {controls} control replicate scores"}
    assert [row["prompt"] for row in json.loads(pair.stdout)["scores"]] == GENRES


def test_pair_partition_in_instance(pair, cli_env):
    with dg.DagsterInstance.get() as instance:
        assert instance.has_dynamic_partition("user_subsets", "pair")
        for asset in USER_SUBSET_ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) >= {"pair"}, asset


def test_genre_subset_reproduces_loo_scores(no_fiddle, cli_env):
    """A user subset of one genre repeats that genre's leave-one-out training, so its scores match."""
    adapters = store(no_fiddle).read("SELECT * FROM adapters WHERE adapter_id IN ('fiddle', 'subset-no-fiddle') "
                                     "ORDER BY adapter_id").to_dicts()
    loo, user = adapters
    assert (user["members"], user["steps"], user["seed"]) == (loo["members"], loo["steps"], loo["seed"])
    query = ("SELECT prompt, seed, target, score FROM wta_scores WHERE adapter_id = ? "
             "ORDER BY target, prompt, seed")
    expected = store(no_fiddle).read(query, ["fiddle"])
    found = store(no_fiddle).read(query, ["subset-no-fiddle"])
    assert found.select("prompt", "seed", "target").equals(expected.select("prompt", "seed", "target"))
    # Equal weights give equal scores. The tolerance allows for CPU rounding when the two trainings
    # ran with another thread setup.
    np.testing.assert_allclose(found["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-3)
    with dg.DagsterInstance.get() as instance:
        for asset in USER_SUBSET_ASSETS:
            assert "no-fiddle" in instance.get_materialized_partitions(dg.AssetKey(asset)), asset


def test_genre_subset_matches_loo_plan(no_fiddle, cli_env):
    """A user subset of one genre gets the member mask and seed of that genre's leave-one-out adapter."""
    paths = WtaPaths(cli_env)
    user = plan_subset(paths, SMOKE, "subset-no-fiddle")
    loo = plan_subset(paths, SMOKE, "fiddle")
    assert user.spec.kind == "user"
    assert torch.equal(user.mask, loo.mask)
    assert user.spec.seed == loo.spec.seed == SMOKE.lora.seed
    assert user.corrupt is None


def test_ids_file_and_patterns(cli_env, tmp_path, capsys):
    paths = WtaPaths(cli_env)
    ids = tmp_path / "ids.txt"
    ids.write_text("# two quartets\nquartet.00001\n\nquartet.00002\n", encoding="utf-8")
    sources = store(cli_env).read("SELECT track_id, source_path FROM tracks WHERE status = 'ok' ORDER BY feature_index")
    first = sources.row(0, named=True)
    folder = str(Path(first["source_path"]).parent)
    try:
        assert add("from-file", "--ids-file", str(ids)) == 0
        assert add("like", "--path-pattern", first["source_path"].replace(".wav", "%")) == 0
        assert add("glob", "--path-pattern", folder + "/[0-3]*.wav") == 0
        assert get_user_subset(paths, "from-file").removed == ("quartet.00001", "quartet.00002")
        assert get_user_subset(paths, "like").removed == (first["track_id"],)
        expected = tuple(row["track_id"] for row in sources.iter_rows(named=True)
                         if Path(row["source_path"]).name[0] in "0123")
        assert get_user_subset(paths, "glob").removed == expected
        assert get_user_subset(paths, "glob").definition["syntax"] == "glob"
    finally:
        for name in ("from-file", "like", "glob"):
            main(["subsets", "remove", name])
    capsys.readouterr()


def test_list_json(pair, cli_env, capsys):
    assert main(["subsets", "list", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    entry = next(entry for entry in payload["subsets"] if entry["name"] == "pair")
    assert entry["adapter_id"] == "subset-pair"
    assert entry["tracks"] == list(PAIR)
    assert entry["adapter_trained"]
    assert entry["scored"]
    assert entry["partition_registered"]
    assert payload["partitions_without_subset"] == []


# ---------------------------------------------------------------------------------------
# Removal (last: it deletes `pair`)


def table_snapshot(home: Path) -> dict[str, pl.DataFrame]:
    with store(home).connect(read_only=True) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()]
    return {table: store(home).read(f'SELECT * FROM "{table}" ORDER BY ALL') for table in tables}


def file_snapshot(home: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file outside the Dagster instance and the database."""
    files = {}
    for path in home.rglob("*"):
        relative = path.relative_to(home).as_posix()
        if path.is_file() and not relative.startswith("dagster/") and not relative.startswith("wta.duckdb"):
            files[relative] = (path.stat().st_size, path.stat().st_mtime_ns)
    return files


def belongs_to_pair(table: str, frame: pl.DataFrame) -> pl.Expr:
    if table in ("user_subsets", "user_subset_tracks"):
        return pl.col("name") == "pair"
    for column in ("adapter_id", "subset_id"):
        if column in frame.columns:
            return pl.col(column) == "subset-pair"
    return pl.lit(False)


def test_remove_touches_nothing_else(pair, cli_env, capsys):
    # An attribution first, so that generation rows and trajectories of the subset exist too.
    assert main(["attribute", "--prompt", "a quiet organ", "--seed", "3", "--threads", "1"]) == 0
    capsys.readouterr()
    tables_before = table_snapshot(cli_env)
    files_before = file_snapshot(cli_env)
    assert tables_before["attribution_scores"].filter(pl.col("adapter_id") == "subset-pair").height == 2

    assert main(["subsets", "remove", "pair", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["partition_deleted"]

    tables_after = table_snapshot(cli_env)
    assert set(tables_after) == set(tables_before)
    for table, before in tables_before.items():
        expected = before.filter(~belongs_to_pair(table, before))
        assert_frame_equal(tables_after[table], expected, check_exact=True)
        if before.height != expected.height:
            assert payload["rows"][table] == before.height - expected.height, table
    files_after = file_snapshot(cli_env)
    removed = set(files_before) - set(files_after)
    assert removed, "no file was deleted"
    assert all("subset-pair" in path for path in removed), sorted(removed)
    assert {path: files_before[path] for path in files_after} == files_after
    assert not any("subset-pair" in path for path in files_after)
    with dg.DagsterInstance.get() as instance:
        assert not instance.has_dynamic_partition("user_subsets", "pair")


def test_remove_unknown_subset(cli_env, capsys):
    code = main(["subsets", "remove", "never-added"])
    assert code == 2
    assert "no user subset named 'never-added'" in capsys.readouterr().err


def test_missing_user_adapter_names_its_asset(tmp_path):
    from wta_core.subsets import materialise_hint

    assert materialise_hint("subset-pair") == "user_subset_adapters for partition 'pair'"
    assert materialise_hint("subset-pair", "trajectories") == "user_subset_trajectories for partition 'pair'"
    assert materialise_hint("fiddle", "trajectories") == "trajectories for partition 'fiddle'"
    paths = WtaPaths(tmp_path)
    with pytest.raises(ArtifactError, match="materialise user_subset_trajectories for partition 'pair' first"):
        load_trajectory(paths, "subset-pair")
