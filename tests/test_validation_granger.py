"""Tests 3 (switch lag) and 4 (Granger causality) on curves whose verdict is known."""

from __future__ import annotations

import numpy as np
import pytest

from wta_core.config import ValidationConfig
from wta_core.validation import scm
from wta_core.validation.granger import (
    first_divergence_step,
    granger_causality_test,
    switch_lag_test,
)
from wta_core.validation.suite import ValidationInputs, run_all

CFG = ValidationConfig()
STEPS = 12


def _switch_curve(switch_step: int, first_value: float = 0.05) -> np.ndarray:
    """Divergence that is zero before the switch and grows from `first_value` at it."""
    curve = np.zeros(STEPS)
    curve[switch_step:] = first_value * 1.5 ** np.arange(STEPS - switch_step)
    return curve


def test_first_divergence_step_finds_onset():
    assert first_divergence_step(_switch_curve(4)) == 4


def test_first_divergence_step_none_for_zero_curve():
    assert first_divergence_step(np.zeros(5)) is None


def test_first_divergence_ignores_rounding():
    curve = _switch_curve(3)
    curve[1] = 1e-15
    assert first_divergence_step(curve) == 3


def test_switch_lag_passes_on_clean_curves():
    result = switch_lag_test({k: _switch_curve(k) for k in (0, 3, 7)}, CFG)
    assert result.passed is True
    assert result.value == 1.0


def test_switch_lag_fails_on_early_divergence():
    early = _switch_curve(5)
    early[2] = 0.01  # divergence before the model changed
    result = switch_lag_test({2: _switch_curve(2), 5: early}, CFG)
    assert result.passed is False
    assert result.value == 0.5
    assert result.details["wrong_lag"] == [5]


def test_switch_lag_fails_on_late_divergence():
    result = switch_lag_test({4: _switch_curve(5)}, CFG)
    assert result.passed is False
    assert result.details["first_divergence_step"] == {"4": 5}


def test_switch_lag_rejects_step_past_curve():
    with pytest.raises(ValueError, match="switch step 12"):
        switch_lag_test({12: _switch_curve(3)}, CFG)


def test_switch_lag_passes_on_scm_trajectories():
    spec = scm.ScmSpec()
    curves = scm.switched_divergence_curves(spec, seed=0, generation=0, removed=0, switch_steps=[0, 5, 10, 19])
    result = switch_lag_test(curves, CFG)
    assert result.passed is True
    assert result.value == 1.0


def _granger_pairs(coupled: bool, n_pairs: int = 4, steps: int = 60) -> tuple[list, list]:
    """Random-walk prediction differences, and divergence driven by their lag-1 increments if coupled."""
    rng = np.random.default_rng(7)
    causes, effects = [], []
    for _ in range(n_pairs):
        increments = rng.standard_normal(steps)
        response = np.zeros(steps)
        for t in range(1, steps):
            drive = 0.9 * increments[t - 1] if coupled else 0.0
            response[t] = 0.3 * response[t - 1] + drive + 0.3 * rng.standard_normal()
        causes.append(np.cumsum(increments))
        effects.append(np.cumsum(response))
    return causes, effects


def test_granger_passes_when_coupled():
    causes, effects = _granger_pairs(coupled=True)
    result = granger_causality_test(causes, effects, CFG)
    assert result.passed is True
    assert result.value < CFG.granger_p
    assert result.details["n_tested"] == 4


def test_granger_fails_when_independent():
    causes, effects = _granger_pairs(coupled=False)
    result = granger_causality_test(causes, effects, CFG)
    assert result.passed is False
    assert result.value > 0.05


def test_granger_skips_short_series():
    causes, effects = _granger_pairs(coupled=True)
    result = granger_causality_test(causes + [np.arange(5.0)], effects + [np.arange(5.0) ** 2], CFG)
    assert result.details["n_tested"] == 4
    assert "needs at least" in result.details["skipped"][0]["reason"]


def test_granger_skips_constant_series():
    causes, effects = _granger_pairs(coupled=True)
    flat = np.zeros(60)
    result = granger_causality_test(causes + [flat], effects + [np.arange(60.0) ** 1.5], CFG)
    assert result.details["skipped"][0]["reason"] == "a differenced series is constant"


def test_granger_not_run_when_all_skipped():
    result = granger_causality_test([np.arange(4.0)], [np.arange(4.0)], CFG)
    assert result.passed is None
    assert "skipped" in result.details["reason"]


def test_granger_rejects_unpaired_series():
    with pytest.raises(ValueError, match="one divergence series"):
        granger_causality_test([np.zeros(10)], [], CFG)


def test_granger_tests_not_run_without_input():
    results = run_all(ValidationInputs(scm=None), CFG)
    assert results[2].passed is None
    assert results[3].passed is None
    assert "switched" in results[2].details["reason"]
