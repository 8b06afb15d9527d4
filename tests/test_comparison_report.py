"""Rows of the `method_comparison` table, the Markdown table and the bar chart."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import polars as pl
import pytest

from wta_core.comparison.method import MethodScores, wta_method_scores
from wta_core.comparison.metrics import (
    METRICS,
    LdsInputs,
    MethodEvaluation,
    RetrainingEffect,
    compare_methods,
    lds_masks,
)
from wta_core.comparison.report import (
    best_methods,
    comparison_frame,
    comparison_markdown,
    comparison_plot,
    comparison_rows,
)

GENRES = ("blues", "jazz", "rock", "folk")


def _evaluations() -> list[MethodEvaluation]:
    """Destination-only matches the effect exactly; WTA swaps two off-diagonal scores of prompt 0."""
    rng = np.random.default_rng(0)
    effect = rng.uniform(0.1, 1.0, (4, 4))
    np.fill_diagonal(effect, 2.0)
    wta = effect.copy()
    wta[[1, 2], 0] = wta[[2, 1], 0]
    masks = lds_masks(GENRES, 6, seed=0)
    methods = [
        MethodScores("wta", wta, GENRES, GENRES, seconds=2.0, retrainings=7),
        MethodScores("destination-only", effect, GENRES, GENRES, seconds=1.0, retrainings=4),
        MethodScores("embedding-mfcc-chroma", np.ones((4, 4)), GENRES, GENRES, seconds=3.0, retrainings=0,
                     details={"embedding": "mfcc-chroma"}),
    ]
    return compare_methods(methods, RetrainingEffect(effect, GENRES, GENRES),
                           LdsInputs(masks, masks.astype(float) @ effect))


def test_one_row_per_method_metric():
    rows = comparison_rows(_evaluations())
    assert len(rows) == 3 * len(METRICS)
    assert set(rows[0]) == {"method", "metric", "value", "details"}


def test_details_are_json():
    rows = comparison_rows(_evaluations())
    details = json.loads(next(row["details"] for row in rows if row["method"] == "embedding-mfcc-chroma"))
    assert details["embedding"] == "mfcc-chroma"


def test_undefined_value_is_null():
    rows = comparison_rows(_evaluations())
    constant = next(row for row in rows
                    if row["method"] == "embedding-mfcc-chroma" and row["metric"] == "spearman_effect")
    assert constant["value"] is None
    assert "undefined" in json.loads(constant["details"])


def test_rows_load_into_duckdb():
    frame = comparison_frame(comparison_rows(_evaluations()))
    connection = duckdb.connect()
    connection.register("incoming", frame.to_arrow())
    connection.execute("CREATE TABLE method_comparison AS SELECT * FROM incoming")
    count = connection.execute("SELECT count(*) FROM method_comparison WHERE method = 'wta'").fetchone()[0]
    assert count == len(METRICS)


def test_best_method_by_direction():
    best = best_methods(comparison_rows(_evaluations()))
    assert best["spearman_effect"] == ["destination-only"]
    assert best["retrainings"] == ["embedding-mfcc-chroma"]
    assert best["seconds"] == ["destination-only"]


def test_markdown_says_when_wta_loses():
    markdown = comparison_markdown(comparison_rows(_evaluations()))
    spearman_line = next(line for line in markdown.splitlines() if line.startswith("| spearman_effect"))
    assert spearman_line.rstrip(" |").endswith("no: destination-only")


def test_markdown_marks_tie():
    markdown = comparison_markdown(comparison_rows(_evaluations()))
    top1_line = next(line for line in markdown.splitlines() if line.startswith("| top1_prompt_genre"))
    assert top1_line.rstrip(" |").endswith("tied")


def test_markdown_names_ground_truth():
    assert "Ground truth: leave-one-genre-out effect" in comparison_markdown(comparison_rows(_evaluations()))


def test_plot_written(tmp_path):
    path = comparison_plot(comparison_rows(_evaluations()), tmp_path / "figures" / "method_comparison.png")
    assert path.is_file()
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_rows_raises(tmp_path):
    with pytest.raises(ValueError, match="no comparison rows"):
        comparison_plot([], tmp_path / "empty.png")


def test_wta_matrix_from_score_rows():
    rows = [
        {"kind": "loo", "removed_genre": removed, "prompt": prompt, "seed": seed, "target": "latent",
         "score": float(10 * i + j + seed)}
        for i, removed in enumerate(GENRES[:2]) for j, prompt in enumerate(GENRES[:2]) for seed in (0, 1)
    ]
    rows.append({"kind": "control", "removed_genre": None, "prompt": "blues", "seed": 0, "target": "latent",
                 "score": 99.0})
    scores = wta_method_scores(pl.DataFrame(rows), GENRES[:2], seconds=1.0, n_controls=3)
    np.testing.assert_allclose(scores.matrix, [[0.5, 1.5], [10.5, 11.5]])
    assert scores.retrainings == 5


def test_wta_matrix_missing_pair_raises():
    rows = [{"kind": "loo", "removed_genre": "blues", "prompt": "blues", "seed": 0, "target": "latent",
             "score": 1.0}]
    with pytest.raises(ValueError, match="removed genre 'blues' and prompt 'jazz'"):
        wta_method_scores(pl.DataFrame(rows), GENRES[:2], seconds=1.0, n_controls=0)
