"""The `wta` command on a small home built here: tables, the score matrix, the report, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from wta_core.cli import main
from wta_core.storage import TableStore

REPO = Path(__file__).resolve().parents[1]
GENRES = ("chorale", "fiddle", "quartet")
SEEDS = (0, 1)
SEED_OFFSETS = (-0.05, 0.05)  # per-seed deviation from the cell mean, so each mean is known
CONTROL_NOTE = "against 12 control replicate scores"

# Mean latent LOO score per (removed genre, prompt genre); predicted_clean is twice as large.
LOO_MEANS = {
    "chorale": {"chorale": 0.9, "fiddle": 0.2, "quartet": 0.3},
    "fiddle": {"chorale": 0.25, "fiddle": 0.8, "quartet": 0.35},
    "quartet": {"chorale": 0.15, "fiddle": 0.4, "quartet": 0.7},
}
TARGET_FACTORS = {"latent": 1.0, "predicted_clean": 2.0}
CONTROL_SCORE = 0.1

# The columns that wta_core.pipeline.scoring and validation_run write. They are copied here
# because importing those modules loads torch, which would take most of this file's time.
SCORE_SCHEMA = {
    "adapter_id": pl.String, "kind": pl.String, "removed_genre": pl.String, "prompt": pl.String,
    "prompt_text": pl.String, "seed": pl.Int64, "target": pl.String, "score": pl.Float64,
    "method": pl.String, "weighting": pl.String, "z_score": pl.Float64, "p_value": pl.Float64,
    "calibration": pl.String,
}
RESULT_SCHEMA = {"test_id": pl.Int64, "name": pl.String, "metric": pl.String, "value": pl.Float64,
                 "threshold": pl.Float64, "passed": pl.Boolean, "verdict": pl.String, "details": pl.String}


def score_row(adapter_id, kind, removed, prompt, seed, target, score):
    return {
        "adapter_id": adapter_id, "kind": kind, "removed_genre": removed, "prompt": prompt,
        "prompt_text": f"{prompt} music", "seed": seed, "target": target, "score": score,
        "method": "exact", "weighting": "exponential", "z_score": (score - CONTROL_SCORE) / 0.02,
        "p_value": 0.05, "calibration": CONTROL_NOTE,
    }


def score_frame() -> pl.DataFrame:
    rows = []
    for target, factor in TARGET_FACTORS.items():
        for removed, means in LOO_MEANS.items():
            for prompt, mean in means.items():
                for seed, offset in zip(SEEDS, SEED_OFFSETS):
                    rows.append(score_row(removed, "loo", removed, prompt, seed, target, factor * (mean + offset)))
        for adapter_id in ("control-1", "control-2"):
            for prompt in GENRES:
                for seed in SEEDS:
                    rows.append(score_row(adapter_id, "control", None, prompt, seed, target, factor * CONTROL_SCORE))
    return pl.DataFrame(rows, schema=SCORE_SCHEMA)


def result_frame() -> pl.DataFrame:
    rows = [
        {"test_id": 5, "name": "Noise isolation", "metric": "rank of the corrupted genre", "value": None,
         "threshold": 1.0, "passed": None, "verdict": "NOT RUN",
         "details": json.dumps({"reason": "no noise adapter in this run"})},
        {"test_id": 7, "name": "Permutation test", "metric": "permutation p-value", "value": 0.2,
         "threshold": 0.001, "passed": False, "verdict": "FAIL", "details": "{}"},
        {"test_id": 9, "name": "Leave-one-out top-1", "metric": "share of prompts", "value": 1.0,
         "threshold": 1.0, "passed": True, "verdict": "PASS", "details": "{}"},
    ]
    return pl.DataFrame(rows, schema=RESULT_SCHEMA)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A smoke home with a 3-genre LOO matrix, controls, three validation results and the report."""
    root = tmp_path_factory.mktemp("cli") / "home"
    root.mkdir()
    (root / "preset").write_text("smoke\n", encoding="utf-8")
    store = TableStore(root / "wta.duckdb")
    store.replace_rows("wta_scores", score_frame())
    store.replace_rows("validation_results", result_frame())
    (root / "reports").mkdir()
    (root / "reports" / "validation_report.md").write_text("# Validation\n", encoding="utf-8")
    return root


@pytest.fixture
def tracks_only_home(tmp_path) -> Path:
    """A home whose database contains only `tracks`, as after the dataset asset alone."""
    root = tmp_path / "early"
    TableStore(root / "wta.duckdb").replace_rows("tracks", pl.DataFrame({"track_id": ["a"], "genre": ["chorale"]}))
    return root


def run_json(capsys, *args) -> dict:
    code = main([*args, "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def database_mean(home: Path, removed: str, prompt: str, target: str) -> float:
    connection = duckdb.connect(str(home / "wta.duckdb"), read_only=True)
    try:
        rows = connection.execute(
            "SELECT avg(score) FROM wta_scores WHERE kind = 'loo' AND removed_genre = ? AND prompt = ? AND target = ?",
            [removed, prompt, target],
        ).fetchall()
    finally:
        connection.close()
    return rows[0][0]


# ---------------------------------------------------------------------------------------
# wta tables


def test_tables_text(home, capsys):
    code = main(["tables", "--home", str(home)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert ["wta_scores", "table", "60"] in [line.split() for line in lines]
    assert ["validation_results", "table", "3"] in [line.split() for line in lines]


def test_tables_json(home, capsys):
    payload = run_json(capsys, "tables", "--home", str(home))
    counts = {table["name"]: table["rows"] for table in payload["tables"]}
    assert counts == {"validation_results": 3, "wta_scores": 60}
    assert payload["database"] == str(home / "wta.duckdb")


# ---------------------------------------------------------------------------------------
# wta scores


def test_scores_matrix_text(home, capsys):
    code = main(["scores", "--home", str(home)])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()}
    assert code == 0
    assert "target latent, method exact, weighting exponential" in out
    assert "mean over 2 seeds" in out
    assert rows["chorale"] == ["0.9000", "0.2000", "0.3000", "chorale"]
    assert rows["fiddle"] == ["0.2500", "0.8000", "0.3500", "fiddle"]
    assert rows["quartet"] == ["0.1500", "0.4000", "0.7000", "quartet"]
    assert rows["control"] == ["(mean)", "0.1000", "0.1000", "0.1000"]
    assert f"calibration: {CONTROL_NOTE}" in out


def test_scores_json_genres(home, capsys):
    payload = run_json(capsys, "scores", "--home", str(home))
    entries = payload["genres"]
    assert [entry["removed_genre"] for entry in entries] == list(GENRES)
    for entry in entries:
        removed = entry["removed_genre"]
        assert list(entry["scores"]) == list(GENRES)
        assert entry["top_prompt"] == removed
        assert entry["seeds"] == {genre: len(SEEDS) for genre in GENRES}
        for prompt, value in entry["scores"].items():
            assert value == database_mean(home, removed, prompt, "latent")
            assert value == pytest.approx(LOO_MEANS[removed][prompt])


def test_scores_json_settings(home, capsys):
    payload = run_json(capsys, "scores", "--home", str(home))
    assert payload["preset"] == "smoke"
    assert payload["target"] == "latent"
    assert payload["method"] == "exact"
    assert payload["weighting"] == "exponential"
    assert payload["control_scores"] == pytest.approx({genre: CONTROL_SCORE for genre in GENRES})
    assert payload["calibration"] == [CONTROL_NOTE]


def test_scores_target_option(home, capsys):
    payload = run_json(capsys, "scores", "--home", str(home), "--target", "predicted_clean")
    chorale = payload["genres"][0]
    assert payload["target"] == "predicted_clean"
    assert chorale["scores"]["chorale"] == database_mean(home, "chorale", "chorale", "predicted_clean")
    assert chorale["scores"]["chorale"] == pytest.approx(1.8)


def test_scores_top_rows(home, capsys):
    payload = run_json(capsys, "scores", "--home", str(home), "--top", "3")
    top = payload["top"]
    first = top[0]
    assert len(top) == 3
    assert [row["rank"] for row in top] == [1, 2, 3]
    assert [row["score"] for row in top] == sorted((row["score"] for row in top), reverse=True)
    assert (first["adapter_id"], first["prompt"], first["seed"]) == ("chorale", "chorale", 1)
    assert first["score"] == pytest.approx(0.95)
    assert first["z_score"] == pytest.approx((0.95 - CONTROL_SCORE) / 0.02)
    assert first["p_value"] == pytest.approx(0.05)


def test_scores_top_zero(home, capsys):
    code = main(["scores", "--home", str(home), "--top", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Top" not in out
    assert "chorale" in out


# ---------------------------------------------------------------------------------------
# wta report


def test_report_text(home, capsys):
    code = main(["report", "--home", str(home)])
    out = capsys.readouterr().out
    assert code == 0
    assert "PASS 1, FAIL 1, NOT RUN 1 (3 tests)" in out
    assert "test 5 Noise isolation: no noise adapter in this run" in out
    assert f"report: {home / 'reports' / 'validation_report.md'}" in out
    assert ["7", "Permutation", "test", "0.2", "0.001", "FAIL", "permutation", "p-value"] in [
        line.split() for line in out.splitlines()]


def test_report_json(home, capsys):
    payload = run_json(capsys, "report", "--home", str(home))
    verdicts = {test["test_id"]: test["verdict"] for test in payload["tests"]}
    assert verdicts == {5: "NOT RUN", 7: "FAIL", 9: "PASS"}
    assert payload["counts"] == {"PASS": 1, "FAIL": 1, "NOT RUN": 1}
    assert payload["tests"][0]["value"] is None
    assert payload["tests"][0]["details"] == {"reason": "no noise adapter in this run"}
    assert payload["report"] == str(home / "reports" / "validation_report.md")
    assert payload["report_exists"] is True


def test_home_from_environment(home, capsys, monkeypatch):
    monkeypatch.setenv("WTA_HOME", str(home))
    payload = run_json(capsys, "report")
    assert payload["database"] == str(home / "wta.duckdb")


# ---------------------------------------------------------------------------------------
# Errors


def test_missing_database(tmp_path, capsys):
    missing = tmp_path / "nothing"
    code = main(["scores", "--home", str(missing), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert str(missing / "wta.duckdb") in captured.err
    assert "bash scripts/demo.sh" in captured.err
    assert "Traceback" not in captured.err


def test_missing_scores_table(tracks_only_home, capsys):
    code = main(["scores", "--home", str(tracks_only_home)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "table wta_scores not found" in captured.err
    assert str(tracks_only_home / "wta.duckdb") in captured.err
    assert "materialise wta_scores first: bash scripts/demo.sh" in captured.err


def test_missing_results_table(tracks_only_home, capsys):
    code = main(["report", "--home", str(tracks_only_home)])
    captured = capsys.readouterr()
    assert code == 2
    assert "materialise validation_report first: bash scripts/demo.sh" in captured.err


def test_locked_database(tracks_only_home, capsys, monkeypatch):
    database = tracks_only_home / "wta.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time\n"
         f"connection = duckdb.connect({str(database)!r})\n"
         "print('held', flush=True)\n"
         "time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("WTA_DB_TIMEOUT_S", "0.5")
        code = main(["tables", "--home", str(tracks_only_home)])
    finally:
        holder.kill()
        holder.wait()
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert f"{database} stayed locked" in captured.err


# ---------------------------------------------------------------------------------------
# As a program


def test_module_subprocess(home):
    environment = {**os.environ, "WTA_HOME": str(home)}
    completed = subprocess.run(
        [sys.executable, "-m", "wta_core.cli", "scores", "--json", "--top", "2"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=60,
    )
    payload = json.loads(completed.stdout)
    assert completed.returncode == 0
    assert completed.stderr == ""
    assert len(payload["genres"]) == len(GENRES)
    assert len(payload["top"]) == 2


def test_module_subprocess_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "wta_core.cli", "report", "--home", str(tmp_path / "absent")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith("wta: no WTA database at ")
    assert "Traceback" not in completed.stderr
