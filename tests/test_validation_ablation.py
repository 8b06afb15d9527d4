"""Tests 5 (noise isolation) and 6 (dose-response) on scores whose verdict is known."""

from __future__ import annotations

import pytest

from wta_core.config import ValidationConfig
from wta_core.validation.ablation import dose_response_test, noise_isolation_test
from wta_core.validation.suite import ValidationInputs, run_all

CFG = ValidationConfig()
FRACTIONS = [0.0, 0.25, 0.5, 0.75, 1.0]


def test_noise_isolation_passes_when_corrupted_genre_leads():
    result = noise_isolation_test({"jazz": 0.9, "rock": 0.2, "folk": 0.3}, "jazz", CFG)
    assert result.passed is True
    assert result.value == 1
    assert result.details["ranking"] == ["jazz", "folk", "rock"]


def test_noise_isolation_fails_when_outranked():
    result = noise_isolation_test({"jazz": 0.25, "rock": 0.2, "folk": 0.3}, "jazz", CFG)
    assert result.passed is False
    assert result.value == 2


def test_noise_isolation_tie_counts_against():
    result = noise_isolation_test({"jazz": 0.5, "rock": 0.5}, "jazz", CFG)
    assert result.value == 2


def test_noise_isolation_rejects_missing_genre():
    with pytest.raises(ValueError, match="'blues'"):
        noise_isolation_test({"jazz": 0.5}, "blues", CFG)


def test_dose_response_passes_on_linear_scores():
    result = dose_response_test(FRACTIONS, [0.1, 0.3, 0.5, 0.68, 0.9], CFG)
    assert result.passed is True
    assert result.value > 0.99
    assert result.details["monotone"] is True


def test_dose_response_fails_on_dip():
    # Linear overall (r above 0.99), but the score drops from fraction 0.5 to 0.625.
    fractions = [index / 8 for index in range(9)]
    scores = list(fractions)
    scores[5] = scores[4] - 0.01
    result = dose_response_test(fractions, scores, CFG)
    assert result.value >= CFG.dose_pearson_r
    assert result.passed is False
    assert result.details["decreasing_steps"] == [[0.5, 0.625]]


def test_dose_response_fails_on_step_shape():
    # Monotone, but all of the effect arrives at full removal.
    result = dose_response_test(FRACTIONS, [0.1, 0.1, 0.1, 0.1, 0.9], CFG)
    assert result.details["monotone"] is True
    assert result.passed is False


def test_dose_response_fails_on_constant_scores():
    result = dose_response_test(FRACTIONS, [0.2] * 5, CFG)
    assert result.passed is False
    assert "constant" in result.details["reason"]


def test_dose_response_averages_replicates():
    scores = [[0.0, 0.2], [0.2, 0.4], [0.4, 0.6], [0.6, 0.8], [0.8, 1.0]]
    result = dose_response_test(FRACTIONS, scores, CFG)
    assert result.details["scores"] == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])


def test_dose_response_sorts_fractions():
    result = dose_response_test([1.0, 0.0, 0.5], [0.9, 0.1, 0.5], CFG)
    assert result.details["fractions"] == [0.0, 0.5, 1.0]
    assert result.passed is True


def test_dose_response_rejects_length_mismatch():
    with pytest.raises(ValueError, match="length F"):
        dose_response_test(FRACTIONS, [0.1, 0.2], CFG)


def test_ablation_tests_not_run_without_input():
    results = run_all(ValidationInputs(scm=None, noise_scores={"jazz": 1.0}), CFG)
    assert results[4].passed is None
    assert "corrupted genre" in results[4].details["reason"]
    assert results[5].passed is None
