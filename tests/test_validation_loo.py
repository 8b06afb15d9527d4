"""Tests 9 (top-1), 10 (unmatched below the noise floor) and 11 (proximity gradient)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wta_core.config import ValidationConfig
from wta_core.validation.loo import independence_test, loo_top1_test, proximity_test
from wta_core.validation.suite import ValidationInputs, run_all

CFG = ValidationConfig()
GENRES = ["blues", "jazz", "rock", "folk"]


def _diagonal_matrix(n_genres: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 0.5, (n_genres, n_genres)) + np.eye(n_genres)


def _line_world(n_genres: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Genres on a line: distance |i - j|, unmatched score falling with distance, plus noise."""
    positions = np.arange(n_genres, dtype=float)
    distances = np.abs(positions[:, None] - positions[None, :])
    rng = np.random.default_rng(2)
    scores = 1.0 / (1.0 + distances) + 0.02 * rng.standard_normal((n_genres, n_genres))
    np.fill_diagonal(scores, 3.0)
    return scores, distances


def test_top1_passes_on_diagonal_matrix():
    result = loo_top1_test(_diagonal_matrix(), CFG, GENRES)
    assert result.passed is True
    assert result.details["matches"] == 4


def test_top1_fails_on_one_miss():
    matrix = _diagonal_matrix()
    matrix[2, 1] = 5.0  # removing rock moves jazz prompts most
    result = loo_top1_test(matrix, CFG, GENRES)
    assert result.passed is False
    assert result.value == 0.75
    assert result.details["missed_prompts"] == ["jazz"]
    assert result.details["top_removed_genre"]["jazz"] == "rock"


def test_top1_counts_tie_as_miss():
    matrix = np.ones((3, 3))
    matrix[0, 0] = 2.0
    matrix[1, 1] = 2.0
    matrix[2, 2] = 2.0
    matrix[1, 0] = 2.0
    assert loo_top1_test(matrix, CFG).value == pytest.approx(2 / 3)


def test_top1_reports_per_seed_shares():
    good = _diagonal_matrix()
    bad = good.copy()
    bad[0, 1] = 9.0
    seeds = np.stack([good, bad])
    result = loo_top1_test(seeds.mean(axis=0), CFG, GENRES, seed_scores=seeds)
    assert result.details["per_seed_top1_share"] == [1.0, 0.75]


def test_independence_passes_inside_noise_floor():
    controls = np.linspace(0.0, 1.0, 101)  # 95% quantile is 0.95
    matrix = np.full((4, 4), 0.5)
    np.fill_diagonal(matrix, 3.0)
    result = independence_test(matrix, controls, CFG)
    assert result.passed is True
    assert result.value == 1.0
    assert result.details["noise_floor"] == pytest.approx(0.95)


def test_independence_fails_on_leakage():
    controls = np.linspace(0.0, 1.0, 101)
    matrix = np.full((4, 4), 0.5)
    matrix[0, 1:] = 2.0  # removing genre 0 moves every other genre's prompts
    matrix[1, 0] = 2.0
    np.fill_diagonal(matrix, 3.0)
    result = independence_test(matrix, controls, CFG)
    assert result.passed is False
    assert result.value == pytest.approx(8 / 12)


def test_independence_prefers_seed_scores():
    controls = np.linspace(0.0, 1.0, 101)
    low, high = np.full((3, 3), 0.5), np.full((3, 3), 1.2)
    seeds = np.stack([low, high])  # the mean 0.85 is below the floor, one seed is not
    result = independence_test(seeds.mean(axis=0), controls, CFG, seed_scores=seeds)
    assert result.value == pytest.approx(0.5)
    assert result.details["source"] == "per-seed scores"


def test_independence_rejects_empty_controls():
    with pytest.raises(ValueError, match="control scores are empty"):
        independence_test(np.eye(3), [], CFG)


def test_proximity_passes_when_close_genres_score_higher():
    scores, distances = _line_world()
    result = proximity_test(scores, distances, CFG)
    assert result.passed is True
    assert result.details["rho"] > 0.8
    assert result.details["mantel_p"] < 0.05


def test_proximity_fails_when_far_genres_score_higher():
    scores, distances = _line_world()
    reversed_scores = scores.max() - scores
    result = proximity_test(reversed_scores, distances, CFG)
    assert result.passed is False
    assert result.details["rho"] < 0


def test_proximity_fails_on_unrelated_scores():
    _, distances = _line_world()
    rng = np.random.default_rng(5)
    result = proximity_test(rng.uniform(size=distances.shape), distances, CFG)
    assert result.passed is False


def test_proximity_fails_on_constant_scores():
    _, distances = _line_world()
    result = proximity_test(np.ones_like(distances), distances, CFG)
    assert result.passed is False
    assert "constant" in result.details["reason"]


def test_proximity_rejects_size_mismatch():
    with pytest.raises(ValueError, match="proximity matrix"):
        proximity_test(np.eye(3), np.eye(4), CFG)


def test_loo_tests_not_run_without_inputs():
    fast = dataclasses.replace(CFG, permutation_resamples=99)
    results = run_all(ValidationInputs(scm=None, score_matrix=_diagonal_matrix()), fast)
    assert results[8].passed is True
    assert results[9].passed is None
    assert "control" in results[9].details["reason"]
    assert results[10].passed is None
    assert "proximity" in results[10].details["reason"]
