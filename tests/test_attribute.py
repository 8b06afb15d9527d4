"""`wta attribute`: one user generation scored under every adapter, reused on repeat, and screened.

Every test works on one copy of the smoke home, with torch on one thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from tests.pipeline_fixtures import cli_env, copy_home, prepare_home  # noqa: F401  (cli_env is a fixture)
from wta_core.paths import WtaPaths
from wta_core.pipeline.user_subsets import list_user_subsets
from wta_core.storage import TableStore
from wta_dagster.cli import attribute_lines, main

PROMPT = "a bright fiddle reel"
SEED = 11
STEPS = 8  # the smoke preset's sample.steps
GENERATION = hashlib.sha256(f"{PROMPT}|{SEED}|{STEPS}".encode()).hexdigest()[:12]
CONTROLS = ["control-1", "control-2", "control-3"]
REMOVALS = ["chorale", "dose-25", "dose-50", "dose-75", "fiddle", "noise", "quartet"]


@pytest.fixture(scope="module")
def home(smoke_run, tmp_path_factory) -> Path:
    return copy_home(smoke_run, tmp_path_factory.mktemp("attribute") / "home")


def run_json(capsys, *arguments: str) -> dict:
    assert main(["attribute", *arguments, "--threads", "1", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def first(home, render_cache) -> dict:
    """The JSON output of the first attribution of PROMPT and SEED in the home."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    output = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(output):
            for key, value in prepare_home(home, render_cache).items():
                patch.setenv(key, value)
            assert main(["attribute", "--prompt", PROMPT, "--seed", str(SEED), "--threads", "1", "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(output.getvalue())


def scores(home: Path) -> pl.DataFrame:
    return TableStore(WtaPaths(home).database).read(
        "SELECT * FROM attribution_scores WHERE generation_id = ? ORDER BY adapter_id, target", [GENERATION])


def test_first_call_scores_every_adapter(first):
    assert sorted(first["computed"]) == sorted(CONTROLS + REMOVALS)
    assert first["reused"] == []
    assert sorted(row["adapter_id"] for row in first["ranking"]) == REMOVALS
    assert [row["adapter_id"] for row in first["controls"]] == CONTROLS


def test_attribute_prints_ranked_table(first, cli_env, capsys):
    assert main(["attribute", "--prompt", PROMPT, "--seed", str(SEED), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"generation {GENERATION}: prompt {PROMPT!r}, seed {SEED}, {STEPS} steps"
    header = next(index for index, line in enumerate(lines) if line.startswith("rank"))
    assert lines[header].split() == ["rank", "subset", "kind", "removed", "score", "z-score", "p-value"]
    rows = [line.split() for line in lines[header + 1: header + 1 + len(REMOVALS)]]
    assert sorted(row[1] for row in rows) == REMOVALS
    ranked_scores = [float(row[4]) for row in rows]
    assert ranked_scores == sorted(ranked_scores, reverse=True)
    assert "noise floor (control adapters): control-1" in "\n".join(lines)


def test_attribution_rows_stored(cli_env, first):
    stored = scores(cli_env)
    assert sorted(set(stored["adapter_id"].to_list())) == sorted(CONTROLS + REMOVALS)
    assert stored.height == 2 * len(CONTROLS + REMOVALS)  # latent and predicted_clean
    assert np.isfinite(stored["score"].to_numpy()).all()
    assert np.isfinite(stored["z_score"].to_numpy()).all()
    assert set(stored["calibration"].to_list()) == {"against 3 control replicate scores of this generation"}
    loo = stored.filter(pl.col("kind") == "loo")
    assert loo["removed"].to_list() == loo["adapter_id"].to_list()
    generation = TableStore(WtaPaths(cli_env).database).read_table("generations", {"generation_id": GENERATION})
    assert generation.select("prompt", "seed", "steps").row(0) == (PROMPT, SEED, STEPS)
    folder = WtaPaths(cli_env).trajectory_dir / "generations" / GENERATION
    assert sorted(path.stem for path in folder.glob("*.safetensors")) == sorted(["full", *CONTROLS, *REMOVALS])


def test_second_call_computes_nothing(cli_env, first, capsys):
    stamps = scores(cli_env).select("adapter_id", "target", "computed_at")
    again = run_json(capsys, "--prompt", PROMPT, "--seed", str(SEED), "--steps", str(STEPS))
    assert again["computed"] == []
    assert sorted(again["reused"]) == sorted(CONTROLS + REMOVALS)
    assert again["ranking"] == first["ranking"]
    assert scores(cli_env).select("adapter_id", "target", "computed_at").equals(stamps)


def test_asset_reuses_stored_scores(cli_env, first):
    from wta_dagster.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("generation_attribution")],
            run_config={"ops": {"generation_attribution": {"config": {"prompt": PROMPT, "seed": SEED}}},
                        "resources": {"training": {"config": {"num_threads": 1}}}})
    assert result.success
    materialization = result.asset_materializations_for_node("generation_attribution")[0]
    assert materialization.metadata["generation_id"].value == GENERATION
    assert materialization.metadata["computed"].value == 0
    checks = result.get_asset_check_evaluations()
    assert {check.check_name: check.passed for check in checks} == {
        "every_adapter_scored": True, "attribution_scores_finite": True}


def test_screen_two_tracks(cli_env, first, capsys):
    payload = run_json(capsys, "--prompt", PROMPT, "--seed", str(SEED), "--screen", "2")
    screened = payload["screen"]
    assert screened["k"] == 2
    assert screened["tracks_total"] == 24
    assert screened["untested_tracks"] == 22
    assert "were not tested" in screened["note"]
    candidates = screened["candidates"]
    assert [candidate["rank"] for candidate in candidates] == [1, 2]
    assert candidates[0]["similarity"] >= candidates[1]["similarity"]
    assert (screened["by"], screened["score"]) == ("embedding", "mfcc-chroma")
    for candidate in candidates:
        assert candidate["subset"] == "track-" + candidate["track_id"]
        assert candidate["score"] is not None
        assert np.isfinite(candidate["score"])
        assert candidate["z_score"] is not None
        assert 0 < candidate["p_value"] <= 1
    assert sorted(payload["computed"]) == sorted(candidate["adapter_id"] for candidate in candidates)

    registered = {subset.name: subset.removed for subset in list_user_subsets(WtaPaths(cli_env))}
    for candidate in candidates:
        assert registered[candidate["subset"]] == (candidate["track_id"],)
    with dg.DagsterInstance.get() as instance:
        partitions = set(instance.get_dynamic_partitions("user_subsets"))
        materialized = instance.get_materialized_partitions(dg.AssetKey("user_subset_scores"))
    assert {candidate["subset"] for candidate in candidates} <= partitions & materialized

    text = "\n".join(attribute_lines(payload))
    assert "Only these 2 tracks were tested. The other 22 of 24 tracks were not tested" in text
    assert candidates[0]["track_id"] in text


@pytest.mark.parametrize("arguments, message", [
    (["--prompt", "  ", "--seed", "1"], "the prompt is empty"),
    (["--prompt", "x", "--seed", "1", "--steps", "1001"], "steps must lie in [1, 1000]"),
    (["--prompt", "x", "--seed", "1", "--screen", "24"], "--screen takes 1 to 23 tracks"),
])
def test_attribute_rejects_bad_input(cli_env, capsys, arguments, message):
    assert main(["attribute", *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--seed", "-1"], "argument --seed: expected 0 or more, got -1"),
    (["--seed", "1", "--steps", "0"], "argument --steps: expected 1 or more, got 0"),
    (["--seed", "x"], "argument --seed: expected a whole number, got 'x'"),
])
def test_attribute_rejects_bad_numbers(cli_env, capsys, arguments, message):
    with pytest.raises(SystemExit) as raised:
        main(["attribute", "--prompt", "x", *arguments])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_screen_by_gradient(cli_env, first, capsys):
    payload = run_json(capsys, "--prompt", PROMPT, "--seed", str(SEED), "--screen", "1", "--screen-by", "gradient")
    screened = payload["screen"]
    assert (screened["by"], screened["score"]) == ("gradient", "tracin-lora")
    (candidate,) = screened["candidates"]
    assert np.isfinite(candidate["similarity"])
    assert candidate["score"] is not None


def test_cli_screens_match_library():
    from wta_core.pipeline.attribution import SCREENS as LIBRARY_SCREENS
    from wta_dagster.cli import SCREENS

    assert SCREENS == LIBRARY_SCREENS


def test_asset_screen_registers_candidates(cli_env, first):
    from wta_dagster.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    config = {"prompt": PROMPT, "seed": SEED, "screen": 2, "screen_by": "embedding"}
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("generation_attribution")],
            run_config={"ops": {"generation_attribution": {"config": config}},
                        "resources": {"training": {"config": {"num_threads": 1}}}})
        partitions = set(instance.get_dynamic_partitions("user_subsets"))
    assert result.success
    metadata = result.asset_materializations_for_node("generation_attribution")[0].metadata
    assert metadata["screen_score"].value == "mfcc-chroma"
    table = metadata["screen_candidates"].value
    names = [line.split(" | ")[4] for line in table.splitlines()[2:]]
    assert len(names) == 2
    assert all(name.startswith("track-") for name in names)
    assert set(names) <= partitions
    registered = {subset.name for subset in list_user_subsets(WtaPaths(cli_env))}
    assert set(names) <= registered
    untested = metadata["screen_untested_partitions"].value
    assert untested == "none" or set(untested.split(", ")) <= set(names)
    assert "were not tested" in metadata["screen_note"].value


def test_asset_rejects_negative_screen(cli_env, first):
    from wta_dagster.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("generation_attribution")], raise_on_error=False,
            run_config={"ops": {"generation_attribution": {"config": {"prompt": PROMPT, "screen": -1}}}})
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = str(failure.step_failure_data.error)
    assert "screen" in message
    assert "greater than or equal to 0" in message
