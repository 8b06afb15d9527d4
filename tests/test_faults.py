"""Interruptions, bad input, untrusted files and failed writes: each fails clearly and keeps earlier results.

Most tests work on a copy of the session's smoke home, so the shared home stays untouched.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.conftest import tone, wav_bytes
from tests.pipeline_fixtures import prepare_home, subprocess_env
from tests.tiny_denoiser import tiny_model
from wta_core.config import get_preset, replace
from wta_core.data import embedded
from wta_core.errors import ArtifactError, ConfigError, UnsafeFileError, WtaError
from wta_core.lora import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, load_adapter
from wta_core.model import load_base_model
from wta_core.paths import WtaPaths, bind_preset
from wta_core.pipeline import generation
from wta_core.pipeline.adapters import plan_subset, write_subset
from wta_core.pipeline.generation import StoredTrajectory, check_comparable, load_trajectory, trajectory_path
from wta_core.storage import TableStore
from wta_core.subsets import find_spec, subset_specs
from wta_dagster.assets.adapters import lora_adapters
from wta_dagster.assets.dataset import gtzan_dataset
from wta_dagster.assets.scores import wta_scores
from wta_dagster.assets.subsets import loo_subsets
from wta_dagster.assets.trajectories import trajectories
from wta_dagster.assets.validation import validation_report
from wta_dagster.definitions import defs
from wta_dagster.main import main, scoring_order
from wta_dagster.resources import WtaSettings

SMOKE = get_preset("smoke")
GENRES = ["chorale", "fiddle", "quartet"]
PARTITION = "fiddle"
DAGSTER = str(Path(sys.executable).with_name("dagster"))
# Tables with one set of rows per partition, and the column that names the partition.
PARTITIONED_TABLES = {"subsets": "subset_id", "subset_members": "subset_id", "adapters": "adapter_id",
                      "trajectories": "adapter_id", "step_distances": "adapter_id", "wta_scores": "adapter_id"}
SORT_KEYS = {
    "tracks": ["track_id"], "corpus_split": ["piece", "role"], "subsets": ["subset_id"],
    "subset_members": ["subset_id", "track_id"], "adapters": ["adapter_id"],
    "trajectories": ["adapter_id", "genre", "seed"],
    "step_distances": ["adapter_id", "target", "prompt", "seed", "step"],
    "wta_scores": ["adapter_id", "target", "prompt", "seed"], "validation_results": ["test_id"],
}


class Killed(BaseException):
    """A stand-in for a SIGKILL inside a write. As a BaseException it passes `except Exception` handlers."""


def killed_write_text(self: Path, data: str, *args, **kwargs) -> int:
    """Create the file, then raise `Killed` before any byte lands in it."""
    self.write_bytes(b"")
    raise Killed


def copy_home(source: Path, target: Path) -> Path:
    """Copy a WTA home without its Dagster instance and lock files."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock", "dagster"))
    return target


def resources(home: Path) -> dict:
    """The definitions' resources, so the thread count matches the smoke run, with `home` as WTA_HOME."""
    return {**defs.resources, "settings": WtaSettings(home=str(home), dataset="embedded", preset="smoke")}


def materialize(home: Path, assets: list, partition: str | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, partition_key=partition, resources=resources(home), raise_on_error=False)


def failure_message(result: dg.ExecuteInProcessResult, node: str) -> str:
    """Return the failed step's error class names and messages, outermost first, including the causes."""
    error = result.failure_data_for_node(node).error
    lines = []
    while error is not None:
        lines.append(f"{error.cls_name}: {error.message}")
        error = error.cause
    return "\n".join(lines)


def table_snapshot(home: Path) -> dict[str, pl.DataFrame]:
    """Read every table of the home, sorted, through a fresh read-only connection."""
    store = TableStore(home / "wta.duckdb")
    return {table: store.read(f'SELECT * FROM "{table}" ORDER BY {", ".join(keys)}')
            for table, keys in SORT_KEYS.items()}


def assert_tables_equal(before: dict[str, pl.DataFrame], after: dict[str, pl.DataFrame]) -> None:
    for table in before:
        assert_frame_equal(after[table], before[table], check_exact=True)


def home_files(home: Path) -> dict[str, bytes]:
    """Map the relative path of every artifact file to its bytes, except the database and its lock and WAL."""
    files = {}
    for path in sorted(home.rglob("*")):
        relative = path.relative_to(home)
        if path.is_file() and not path.name.startswith("wta.duckdb") and relative.parts[0] != "dagster":
            files[str(relative)] = path.read_bytes()
    return files


class CreatesMarker:
    """An object whose unpickling creates `marker`, like a pickle that runs code when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def code_running_pickle(marker: Path) -> bytes:
    payload = pickle.dumps(CreatesMarker(marker))
    # Unpickling here creates the marker, so a marker that stays absent later proves no unpickling.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    return payload


# ---------------------------------------------------------------------------------------
# Interruptions: a killed write never leaves a partial file that is read as complete.

# Runs the dagster CLI in this process and SIGKILLs the process while it writes the
# trajectory file. The temporary file is first cut to half its size, as a write cut short.
KILL_MID_WRITE = """
import os, runpy, signal, sys
from wta_core.pipeline import generation

write = generation.write_safetensors

def write_half_then_die(path, tensors, metadata):
    write(path, tensors, metadata)
    os.truncate(path, os.path.getsize(path) // 2)
    os.kill(os.getpid(), signal.SIGKILL)

generation.write_safetensors = write_half_then_die
sys.argv = ["dagster", *sys.argv[1:]]
runpy.run_module("dagster", run_name="__main__")
"""
# The in-process executor keeps the step, and so the patched writer, in the CLI's process.
IN_PROCESS = json.dumps({"execution": {"config": {"in_process": {}}}})


def materialize_arguments(asset: str, partition: str) -> list[str]:
    return ["asset", "materialize", "-m", "wta_dagster", "--select", asset, "--partition", partition]


def test_killed_trajectory_write_resumes(smoke_run, tmp_path, render_cache):
    home = copy_home(smoke_run, tmp_path / "home")
    env = subprocess_env(home, render_cache)
    final = trajectory_path(WtaPaths(home), PARTITION)
    uninterrupted = final.read_bytes()
    rows_before = table_snapshot(home)["trajectories"]
    wrapper = tmp_path / "kill_mid_write.py"
    wrapper.write_text(KILL_MID_WRITE, encoding="utf-8")

    killed = subprocess.run(
        [sys.executable, str(wrapper), *materialize_arguments("trajectories", PARTITION), "--config-json", IN_PROCESS],
        env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = final.with_suffix(".tmp")
    assert partial.is_file()
    assert 0 < partial.stat().st_size < len(uninterrupted)
    assert final.read_bytes() == uninterrupted
    assert_frame_equal(table_snapshot(home)["trajectories"], rows_before, check_exact=True)
    assert torch.equal(load_trajectory(WtaPaths(home), PARTITION).latents,
                       load_trajectory(WtaPaths(smoke_run), PARTITION).latents)

    completed = subprocess.run([DAGSTER, *materialize_arguments("trajectories", PARTITION)],
                               env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert final.read_bytes() == uninterrupted
    assert not partial.exists()
    # The rows are the same, except that they now name the copied home's file.
    expected_rows = rows_before.with_columns(
        pl.when(pl.col("adapter_id") == PARTITION).then(pl.lit(str(final))).otherwise(pl.col("path")).alias("path"))
    assert_frame_equal(table_snapshot(home)["trajectories"], expected_rows, check_exact=True)


def test_stale_temporary_trajectory_not_read(smoke_run, tmp_path):
    home = copy_home(smoke_run, tmp_path / "home")
    final = trajectory_path(WtaPaths(home), PARTITION)
    # Even a complete file under the temporary name is never taken for the trajectory.
    final.rename(final.with_suffix(".tmp"))
    with pytest.raises(ArtifactError) as error:
        load_trajectory(WtaPaths(home), PARTITION)
    message = str(error.value)
    assert str(final) in message
    assert f"materialise trajectories for partition {PARTITION!r}" in message


def test_killed_preset_marker_write(tmp_path, monkeypatch):
    paths = WtaPaths(tmp_path / "home")
    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", killed_write_text)
        with pytest.raises(Killed):
            bind_preset(paths, "smoke")
    bind_preset(paths, "smoke")
    assert (paths.home / "preset").read_text(encoding="utf-8") == "smoke\n"


def test_killed_corpus_split_write(tmp_path, monkeypatch):
    path = tmp_path / "dataset" / "corpus_split.json"
    embedded.write_split([{"piece": "first"}], path)
    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", killed_write_text)
        with pytest.raises(Killed):
            embedded.write_split([{"piece": "second"}], path)
    assert json.loads(path.read_text(encoding="utf-8")) == [{"piece": "first"}]


def test_killed_render_failure_record(tmp_path, monkeypatch):
    def render_fails(piece, program):
        raise ValueError("badly formed repeats")

    monkeypatch.setattr(embedded, "render_piece", render_fails)
    piece = embedded.Piece(path=Path("collection/tune.abc"), number=None)
    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", killed_write_text)
        with pytest.raises(Killed):
            embedded._cached_render(tmp_path, piece, 0)
    _, reason = embedded._cached_render(tmp_path, piece, 0)
    assert "badly formed repeats" in reason


# ---------------------------------------------------------------------------------------
# Reruns: one set of rows per partition, and no new files.


def partition_row_counts(home: Path) -> dict[str, tuple[int, int]]:
    """Count the rows of the partition and all rows, per partitioned table."""
    store = TableStore(home / "wta.duckdb")
    counts = {}
    for table, column in PARTITIONED_TABLES.items():
        partition = store.read(f'SELECT count(*) AS n FROM "{table}" WHERE "{column}" = ?', [PARTITION])["n"][0]
        total = store.read(f'SELECT count(*) AS n FROM "{table}"')["n"][0]
        counts[table] = (partition, total)
    return counts


def test_rerun_partition_keeps_one_set(smoke_run, tmp_path):
    home = copy_home(smoke_run, tmp_path / "home")
    counts_before = partition_row_counts(home)
    files_before = home_files(home)
    assert all(partition > 0 for partition, _ in counts_before.values())

    result = materialize(home, [loo_subsets, lora_adapters, trajectories, wta_scores], PARTITION)
    assert result.success

    assert partition_row_counts(home) == counts_before
    files_after = home_files(home)
    assert sorted(files_after) == sorted(files_before)
    # On the CPU the rerun also gives the same adapter and trajectory bytes.
    adapter = f"adapters/{PARTITION}/{ADAPTER_WEIGHTS_NAME}"
    assert files_after[adapter] == files_before[adapter]
    assert files_after[f"trajectories/{PARTITION}.safetensors"] == files_before[f"trajectories/{PARTITION}.safetensors"]


def test_rerun_dataset_keeps_one_set(smoke_run, tmp_path):
    home = copy_home(smoke_run, tmp_path / "home")
    before = table_snapshot(home)
    files_before = home_files(home)

    assert materialize(home, [gtzan_dataset]).success

    after = table_snapshot(home)
    assert_frame_equal(after["tracks"], before["tracks"], check_exact=True)
    assert_frame_equal(after["corpus_split"], before["corpus_split"], check_exact=True)
    assert sorted(home_files(home)) == sorted(files_before)


# ---------------------------------------------------------------------------------------
# Bad input.


def test_unknown_partition_key_lists_valid():
    with pytest.raises(ConfigError) as error:
        find_spec("jazz", GENRES, SMOKE)
    message = str(error.value)
    assert "partition 'jazz' is not a subset of this dataset" in message
    for key in ("full", "control-1", "chorale", "fiddle", "quartet", "dose-25", "noise"):
        assert repr(key) in message


def test_partition_missing_from_stored_dataset(smoke_run, tmp_path):
    # A key the definitions know (from WTA_DATASET) but the home's dataset lacks.
    home = copy_home(smoke_run, tmp_path / "home")
    with pytest.raises(ConfigError, match=r"partition 'jazz' is not a subset of this dataset.*'fiddle'"):
        plan_subset(WtaPaths(home), SMOKE, "jazz")


def test_main_rejects_unknown_partition(tmp_path, render_cache, monkeypatch):
    home = tmp_path / "home"
    for key, value in prepare_home(home, render_cache).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as error:
        main(["--partition", "fiddle", "--partition", "jazz"])
    message = str(error.value.code)
    assert "unknown --partition 'jazz'" in message
    assert "choose from full, control-1, control-2, control-3, chorale, fiddle, quartet" in message
    # Rejected before any stage ran.
    assert not (home / "wta.duckdb").exists()


def test_main_rejects_zero_workers(tmp_path, render_cache, monkeypatch):
    home = tmp_path / "home"
    for key, value in prepare_home(home, render_cache).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit, match="--workers must be 1 or more, not 0"):
        main(["--workers", "0"])
    assert not (home / "wta.duckdb").exists()


def test_scoring_order_puts_reference_and_controls_first():
    keys = ["chorale", "control-2", "full", "dose-25", "control-1"]
    assert scoring_order(keys) == ["full", "control-2", "control-1", "chorale", "dose-25"]


def test_whole_graph_cli_needs_a_partition(tmp_path, render_cache):
    # The README's reason for the main job: Dagster's CLI rejects `--select '*'` without
    # `--partition` because the selection contains partitioned assets. If a Dagster release
    # lifts this, the test fails and the README's advice should change with it.
    home = tmp_path / "home"
    completed = subprocess.run([DAGSTER, "asset", "materialize", "-m", "wta_dagster", "--select", "*"],
                               env=subprocess_env(home, render_cache), capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode != 0
    assert "Asset has partitions, but no '--partition' option was provided" in completed.stderr
    assert not (home / "wta.duckdb").exists()


def test_cli_rejects_unknown_partition(tmp_path, render_cache):
    home = tmp_path / "home"
    completed = subprocess.run([DAGSTER, *materialize_arguments("loo_subsets", "jazz")],
                               env=subprocess_env(home, render_cache), capture_output=True, text=True, timeout=600)
    assert completed.returncode != 0
    # Dagster's own message, before any asset runs: it names the key but does not list the valid ones.
    assert "partition key `jazz`" in completed.stderr
    assert not (home / "wta.duckdb").exists()


def test_unknown_preset_rejected(tmp_path):
    home = tmp_path / "home"
    settings = WtaSettings(home=str(home), dataset="embedded", preset="tiny")
    result = dg.materialize([gtzan_dataset], resources={"settings": settings}, raise_on_error=False)
    assert not result.success
    message = failure_message(result, "gtzan_dataset")
    assert "ConfigError" in message
    assert "unknown WTA_PRESET 'tiny'; choose one of: demo, loo-baseline, smoke" in message
    # The home is not bound to the unknown preset.
    assert not (home / "preset").exists()


@pytest.mark.parametrize(
    ("section", "changes", "expected"),
    [
        ("lora", {"steps": 0}, "lora.steps must be >= 1, got 0"),
        ("base", {"steps": 0}, "base.steps must be >= 1, got 0"),
        ("sample", {"steps": 0}, "sample.steps must be >= 1, got 0"),
        ("lora", {"learning_rate": -0.002}, "lora.learning_rate must be > 0, got -0.002"),
        ("base", {"learning_rate": -1.0}, "base.learning_rate must be > 0, got -1.0"),
        ("lora", {"dose_fractions": (0.5, 1.5)}, "lora.dose_fractions values must lie in (0, 1), got 1.5"),
    ],
)
def test_out_of_range_value_rejected(section, changes, expected):
    changed = dataclasses.replace(getattr(SMOKE, section), **changes)
    with pytest.raises(ConfigError) as error:
        replace(SMOKE, **{section: changed})
    message = str(error.value)
    assert "preset 'smoke' has invalid values" in message
    assert expected in message
    assert "Fix the values in wta_core/config.py or the run config" in message


def change_adapter_weights(folder: Path, marker: Path) -> Path:
    weights = folder / ADAPTER_WEIGHTS_NAME
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, str(weights))
    return weights


def truncate_adapter_weights(folder: Path, marker: Path) -> Path:
    weights = folder / ADAPTER_WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return weights


def target_missing_module(folder: Path, marker: Path) -> Path:
    config_path = folder / ADAPTER_CONFIG_NAME
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["target_modules"] = [*config["target_modules"], "to_gate"]
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return folder


def replace_weights_with_pickle(folder: Path, marker: Path) -> Path:
    (folder / ADAPTER_WEIGHTS_NAME).unlink()
    pickled = folder / "adapter_model.bin"
    pickled.write_bytes(code_running_pickle(marker))
    return pickled


@pytest.mark.parametrize(
    ("damage", "error_class", "expected"),
    [
        (change_adapter_weights, "ArtifactError", "the file changed after training"),
        (truncate_adapter_weights, "ArtifactError", "the file changed after training"),
        (target_missing_module, "ArtifactError", "targets module 'to_gate', which the base model lacks"),
        (replace_weights_with_pickle, "UnsafeFileError", "is a pickle file (.bin), which can run code when loaded"),
    ],
    ids=["checksum", "truncated", "config", "pickle"],
)
def test_damaged_adapter_stops_sampling(smoke_run, tmp_path, damage, error_class, expected):
    home = copy_home(smoke_run, tmp_path / "home")
    marker = tmp_path / "unpickled"
    named = damage(WtaPaths(home).adapter_dir(PARTITION), marker)
    earlier = trajectory_path(WtaPaths(home), PARTITION).read_bytes()
    tables_before = table_snapshot(home)

    result = materialize(home, [trajectories], PARTITION)

    assert not result.success
    message = failure_message(result, "trajectories")
    assert f"{error_class}: " in message
    assert str(named) in message
    assert expected in message
    assert f"materialise lora_adapters for partition {PARTITION!r} again" in message
    assert trajectory_path(WtaPaths(home), PARTITION).read_bytes() == earlier
    assert_tables_equal(tables_before, table_snapshot(home))
    assert not marker.exists()


def stored_trajectory(adapter_id: str, steps: int, frames: int) -> StoredTrajectory:
    shape = (1, 2, steps, 4, frames)
    return StoredTrajectory(adapter_id=adapter_id, latents=torch.zeros(shape), predicted_clean=torch.zeros(shape),
                            initial_noise=torch.zeros(2, 4, frames), timesteps=torch.arange(steps, 0, -1),
                            genres=["blues"], prompts=["a blues song"], seeds=[0, 1], path=Path(f"{adapter_id}.st"))


@pytest.mark.parametrize(
    ("steps", "frames", "expected"),
    [
        (6, 16, "timesteps differ (8 against 6 steps)"),
        (8, 12, "shapes differ ([1, 2, 8, 4, 16] against [1, 2, 8, 4, 12])"),
    ],
    ids=["steps", "frames"],
)
def test_incomparable_trajectories_rejected(steps, frames, expected):
    with pytest.raises(ArtifactError) as error:
        check_comparable(stored_trajectory("full", 8, 16), stored_trajectory("blues", steps, frames))
    message = str(error.value)
    assert "trajectories of 'blues' and 'full' are not comparable" in message
    assert expected in message
    assert "Materialise trajectories of both partitions again with one preset" in message


def test_shorter_trajectory_not_scored(smoke_run, tmp_path):
    home = copy_home(smoke_run, tmp_path / "home")
    path = trajectory_path(WtaPaths(home), PARTITION)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    shorter = {"latents": tensors["latents"][:, :, :-2].contiguous(),
               "predicted_clean": tensors["predicted_clean"][:, :, :-2].contiguous(),
               "initial_noise": tensors["initial_noise"], "timesteps": tensors["timesteps"][:-2].contiguous()}
    save_file(shorter, str(path), metadata=metadata)
    scores_before = table_snapshot(home)["wta_scores"]

    result = materialize(home, [wta_scores], PARTITION)

    assert not result.success
    message = failure_message(result, "wta_scores")
    steps = SMOKE.sample.steps
    assert f"trajectories of {PARTITION!r} and 'full' are not comparable" in message
    assert f"timesteps differ ({steps} against {steps - 2} steps)" in message
    assert_frame_equal(table_snapshot(home)["wta_scores"], scores_before, check_exact=True)


UNUSUAL_GENRES = {"rock 'n' roll": 150.0, "música": 260.0, "drum&bass": 370.0}


def test_unusual_genre_names_round_trip(tmp_path):
    root = tmp_path / "gtzan"
    for index, (genre, frequency) in enumerate(UNUSUAL_GENRES.items()):
        folder = root / genre
        folder.mkdir(parents=True)
        for number in range(2):
            samples = tone(3.0, 22_050, frequency * (1 + 0.05 * number), seed=10 * index + number)
            (folder / f"{genre}.{number:05d}.wav").write_bytes(wav_bytes(samples, 22_050))
    home = tmp_path / "home"
    settings = WtaSettings(home=str(home), dataset=str(root), preset="smoke")

    result = dg.materialize([gtzan_dataset], resources={"settings": settings}, raise_on_error=False)

    assert result.success
    store = TableStore(home / "wta.duckdb")
    stored = store.read("SELECT DISTINCT genre FROM tracks WHERE status = 'ok'")["genre"].to_list()
    assert sorted(stored) == sorted(UNUSUAL_GENRES)
    paths = WtaPaths(home)
    for genre in UNUSUAL_GENRES:
        tracks = store.read_table("tracks", {"genre": genre})
        assert tracks["source_path"].to_list() == [str(root / genre / f"{genre}.{n:05d}.wav") for n in range(2)]
        # The partition named after the genre: its rows are replaced and read back by that name.
        plan = plan_subset(paths, SMOKE, genre)
        write_subset(paths, plan)
        write_subset(paths, plan)
        assert store.read_table("subsets", {"subset_id": genre})["removed_genre"].to_list() == [genre]
        assert store.read_table("subset_members", {"subset_id": genre}).height == 2 * (len(UNUSUAL_GENRES) - 1)


def test_genre_unusable_as_partition_key():
    with pytest.raises(ConfigError) as error:
        subset_specs(["rock...roll", "jazz", "tab\there"], SMOKE)
    message = str(error.value)
    assert "genre names ['rock...roll', 'tab\\there'] cannot be partition keys" in message
    assert "rename those genre folders" in message


# ---------------------------------------------------------------------------------------
# Untrusted files: pickle weights are rejected and never unpickled.


@pytest.mark.parametrize("name", ["adapter.bin", "adapter.pt", "adapter.ckpt"])
def test_pickle_adapter_path_never_unpickled(tmp_path, name):
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(code_running_pickle(marker))
    with pytest.raises(UnsafeFileError) as error:
        load_adapter(tiny_model(), path)
    assert str(path) in str(error.value)
    assert "convert it to safetensors" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["diffusion_pytorch_model.bin", "model.pt", "model.ckpt"])
def test_pickle_base_model_never_unpickled(tmp_path, name):
    marker = tmp_path / "unpickled"
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(tiny_model().config)), encoding="utf-8")
    (folder / name).write_bytes(code_running_pickle(marker))
    with pytest.raises(UnsafeFileError) as error:
        load_base_model(folder)
    assert str(folder / name) in str(error.value)
    assert "convert it to safetensors" in str(error.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# Disk and database faults.


def test_read_only_trajectory_write(smoke_run, tmp_path, monkeypatch):
    home = copy_home(smoke_run, tmp_path / "home")
    final = trajectory_path(WtaPaths(home), PARTITION)
    earlier = final.read_bytes()
    tables_before = table_snapshot(home)

    # Running as root, a read-only folder would still be writable, so the safetensors
    # writer itself fails as on a read-only file system.
    def read_only(path, tensors, metadata):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(generation, "write_safetensors", read_only)
    result = materialize(home, [trajectories], PARTITION)

    assert not result.success
    message = failure_message(result, "trajectories")
    assert f"ArtifactError: could not write the trajectories of {PARTITION!r} to {final}" in message
    assert "Read-only file system" in message
    assert f"materialise trajectories for partition {PARTITION!r} again" in message
    assert final.read_bytes() == earlier
    assert not final.with_suffix(".tmp").exists()
    assert_tables_equal(tables_before, table_snapshot(home))


def test_unwritable_reports_folder(smoke_run, tmp_path):
    home = copy_home(smoke_run, tmp_path / "home")
    reports = WtaPaths(home).report_dir
    earlier_reports = tmp_path / "earlier_reports"
    shutil.move(reports, earlier_reports)
    # A file where the folder belongs makes every write into it fail, even for root.
    reports.write_text("not a folder", encoding="utf-8")
    tables_before = table_snapshot(home)
    files_before = home_files(home)

    result = materialize(home, [validation_report])

    assert not result.success
    message = failure_message(result, "validation_report")
    assert f"ArtifactError: could not write the validation report into {reports}" in message
    assert "materialise validation_report again" in message
    assert_tables_equal(tables_before, table_snapshot(home))
    assert home_files(home) == files_before


def test_failed_transaction_keeps_rows(tmp_path):
    store = TableStore(tmp_path / "wta.duckdb")
    rows = pl.DataFrame({"adapter_id": ["fiddle", "fiddle"], "seed": [0, 1]})
    store.replace_rows("wta_scores", rows, {"adapter_id": "fiddle"})
    # The delete succeeds and the insert then fails on the text seed, inside one transaction.
    bad = pl.DataFrame({"adapter_id": ["fiddle"], "seed": ["zero"]})
    # The original error surfaces, not the aborted transaction that follows it.
    with pytest.raises(duckdb.ConversionException, match="Could not convert string 'zero'"):
        store.replace_rows("wta_scores", bad, {"adapter_id": "fiddle"})
    assert_frame_equal(store.read("SELECT * FROM wta_scores ORDER BY seed"), rows)


def test_locked_database_times_out(tmp_path, monkeypatch):
    database = tmp_path / "wta.duckdb"
    TableStore(database).replace_rows("tracks", pl.DataFrame({"track_id": ["a"]}))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; connection = duckdb.connect(sys.argv[1]); "
                               "print('open', flush=True); time.sleep(120)", str(database)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        monkeypatch.setenv("WTA_DB_TIMEOUT_S", "1")
        started = time.monotonic()
        with pytest.raises(WtaError) as error:
            TableStore(database).read_table("tracks")
        assert time.monotonic() - started < 30
    finally:
        holder.kill()
        holder.wait(timeout=30)
    message = str(error.value)
    assert f"{database} stayed locked by another process for 1 s" in message
    assert "close other duckdb sessions on this file and rerun" in message
    assert TableStore(database).read_table("tracks")["track_id"].to_list() == ["a"]
