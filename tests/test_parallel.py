"""Genre partitions materialised in parallel processes, with a user's read-only session open."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import polars as pl

from tests.pipeline_fixtures import copy_home, subprocess_env
from wta_core.storage import TableStore

GENRES = ["chorale", "fiddle", "quartet"]
ASSETS = "loo_subsets,lora_adapters,trajectories,wta_scores"


def snapshot(home: Path, table: str, order: list[str]) -> pl.DataFrame:
    return TableStore(home / "wta.duckdb").read(f"SELECT * FROM {table} ORDER BY {', '.join(order)}")


class Reader(threading.Thread):
    """A user's own duckdb session, which opens the file read-only over and over, briefly."""

    def __init__(self, database: Path):
        super().__init__(daemon=True)
        self.database = database
        self.stop = threading.Event()
        self.reads = 0
        self.refused = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with duckdb.connect(str(self.database), read_only=True) as connection:
                    connection.sql("SELECT count(*) FROM wta_scores").fetchall()
                    time.sleep(0.05)
                self.reads += 1
            except duckdb.IOException:
                # The reader, not the run, waits while a writer holds the file.
                self.refused += 1
            time.sleep(0.05)


def test_parallel_genre_backfill(smoke_run, tmp_path, render_cache):
    home = copy_home(smoke_run, tmp_path / "home")
    env = subprocess_env(home, render_cache)
    before_scores = snapshot(home, "wta_scores", ["adapter_id", "target", "prompt", "seed"])
    before_tracks = snapshot(home, "tracks", ["track_id"])

    reader = Reader(home / "wta.duckdb")
    reader.start()
    dagster = str(Path(sys.executable).with_name("dagster"))
    processes = [
        subprocess.Popen([dagster, "asset", "materialize", "-m", "wta_dagster", "--select", ASSETS,
                          "--partition", genre], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for genre in GENRES
    ]
    outputs = [process.communicate(timeout=900)[0] for process in processes]
    reader.stop.set()
    reader.join(timeout=10)

    for genre, process, output in zip(GENRES, processes, outputs):
        assert process.returncode == 0, f"{genre} failed:\n{output[-3000:]}"
        # A writer that meets the reader's lock logs that it waits, and does not fail on it.
        lock_lines = [line for line in output.splitlines() if "Could not set lock" in line]
        assert all("waiting for" in line for line in lock_lines), lock_lines[:3]
    assert reader.reads > 0

    after_scores = snapshot(home, "wta_scores", ["adapter_id", "target", "prompt", "seed"])
    assert after_scores.height == before_scores.height
    duplicates = after_scores.group_by(["adapter_id", "target", "prompt", "seed"]).len().filter(pl.col("len") > 1)
    assert duplicates.height == 0
    # Retraining a genre with the same seeds reproduces its adapter, so every row is equal.
    assert after_scores.equals(before_scores)
    assert snapshot(home, "tracks", ["track_id"]).equals(before_tracks)
    steps = TableStore(home / "wta.duckdb").read(
        "SELECT adapter_id, count(*) AS n FROM step_distances GROUP BY adapter_id ORDER BY adapter_id")
    assert len(set(steps["n"].to_list())) == 1


def test_single_genre_rerun_touches_only_it(smoke_run, tmp_path, render_cache):
    home = copy_home(smoke_run, tmp_path / "home")
    env = subprocess_env(home, render_cache)
    store = TableStore(home / "wta.duckdb")
    # Mark every row, then rerun one genre: only that genre's rows may lose the mark.
    with store.transaction() as connection:
        connection.execute("ALTER TABLE wta_scores ADD COLUMN marker INTEGER")
        connection.execute("UPDATE wta_scores SET marker = 1")
    dagster = str(Path(sys.executable).with_name("dagster"))
    completed = subprocess.run([dagster, "asset", "materialize", "-m", "wta_dagster", "--select", ASSETS,
                                "--partition", "fiddle"], env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = store.read("SELECT adapter_id, count(*) FILTER (WHERE marker IS NULL) AS rewritten, count(*) AS n "
                      "FROM wta_scores GROUP BY adapter_id ORDER BY adapter_id")
    rewritten = dict(zip(rows["adapter_id"].to_list(), rows["rewritten"].to_list()))
    totals = dict(zip(rows["adapter_id"].to_list(), rows["n"].to_list()))
    assert rewritten["fiddle"] == totals["fiddle"]
    assert all(count == 0 for adapter, count in rewritten.items() if adapter != "fiddle")
