"""Tests 7 (permutation of the genre pairing) and 8 (Cohen's d) on matrices whose verdict is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wta_core.config import ValidationConfig
from wta_core.validation.permutation import diagonal_contrast, effect_size_test, permutation_test
from wta_core.validation.suite import ValidationInputs, run_all

CFG = ValidationConfig()


def _diagonal_matrix(n_genres: int, seed: int = 0, gap: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 0.5, (n_genres, n_genres)) + gap * np.eye(n_genres)


def test_contrast_of_identity():
    assert diagonal_contrast(np.eye(3)) == pytest.approx(1.0)


def test_permutation_passes_on_diagonal_matrix():
    result = permutation_test(_diagonal_matrix(10), CFG)
    assert result.passed is True
    assert result.value == pytest.approx(1 / (CFG.permutation_resamples + 1))
    assert result.details["exact"] is False


def test_permutation_fails_on_antidiagonal_matrix():
    matrix = np.fliplr(_diagonal_matrix(10))
    result = permutation_test(matrix, CFG)
    assert result.passed is False
    assert result.value > 0.5


def test_permutation_fails_on_random_matrix():
    rng = np.random.default_rng(3)
    result = permutation_test(rng.uniform(size=(10, 10)), CFG)
    assert result.passed is False


def test_permutation_small_g_is_exact():
    result = permutation_test(_diagonal_matrix(3), CFG, genres=["a", "b", "c"])
    assert result.details["exact"] is True
    assert result.details["n_pairings"] == 6
    assert result.value == pytest.approx(1 / 6)


def test_permutation_small_g_reports_floor():
    result = permutation_test(_diagonal_matrix(3), CFG)
    assert result.passed is False
    assert result.details["min_attainable_p"] == pytest.approx(1 / math.factorial(3))
    assert "cannot pass" in result.details["note"]


def test_permutation_permutes_pairing_only():
    # Row 0 is large everywhere, so the contrast is the same for every pairing that keeps
    # row 0 on a diagonal cell, and a row-wise effect alone must not look significant.
    matrix = np.ones((4, 4))
    matrix[0] = 10.0
    result = permutation_test(matrix, CFG)
    assert result.value == pytest.approx(1.0)


def test_permutation_seeded_result_repeats():
    matrix = _diagonal_matrix(8, gap=0.05)
    first = permutation_test(matrix, CFG).value
    second = permutation_test(matrix, CFG).value
    assert first == second


def test_effect_size_passes_on_diagonal_matrix():
    result = effect_size_test(_diagonal_matrix(5), CFG)
    assert result.passed is True
    assert result.value > 2


def test_effect_size_fails_on_flat_matrix():
    rng = np.random.default_rng(1)
    result = effect_size_test(rng.uniform(size=(5, 5)), CFG)
    assert result.passed is False


def test_effect_size_matches_formula():
    matrix = np.array([[4.0, 1.0, 2.0], [1.0, 6.0, 3.0], [2.0, 1.0, 5.0]])
    matched, unmatched = np.array([4.0, 6.0, 5.0]), np.array([1.0, 2.0, 1.0, 3.0, 2.0, 1.0])
    pooled = math.sqrt((2 * matched.var(ddof=1) + 5 * unmatched.var(ddof=1)) / 7)
    result = effect_size_test(matrix, CFG)
    assert result.value == pytest.approx((matched.mean() - unmatched.mean()) / pooled)


def test_effect_size_uses_seed_scores():
    seeds = np.stack([_diagonal_matrix(4, seed=s) for s in range(3)])
    result = effect_size_test(seeds.mean(axis=0), CFG, seed_scores=seeds)
    assert result.details["n_matched"] == 12
    assert result.details["n_unmatched"] == 36
    assert result.details["source"] == "per-seed scores"


def test_effect_size_infinite_for_constant_groups():
    result = effect_size_test(np.eye(3) + 1.0, CFG)
    assert result.value == math.inf
    assert result.passed is True


def test_effect_size_rejects_wrong_seed_shape():
    with pytest.raises(ValueError, match=r"\[R seeds, 3, 3\]"):
        effect_size_test(np.eye(3), CFG, seed_scores=np.zeros((2, 4, 4)))


def test_matrix_tests_not_run_without_matrix():
    results = run_all(ValidationInputs(scm=None), CFG)
    for index in (6, 7, 8, 9, 10):
        assert results[index].passed is None, f"test {index + 1} ran without a score matrix"
