"""Tests 3 and 4: divergence appears when the model changes, and prediction differences precede it.

Step indexing used throughout: index i of a per-step series refers to denoising step i,
counted from 0 at the noisiest step. A divergence value at index i is the Wasserstein
distance between the two trajectories' states after step i. A prediction-difference
value at index i is the difference between the two models' outputs at step i, both
computed from the states before step i.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from statsmodels.tools.sm_exceptions import InfeasibleTestError
from statsmodels.tsa.stattools import grangercausalitytests

from wta_core.config import ValidationConfig
from wta_core.validation.result import TestResult, make_result, not_run

# A divergence counts as zero when it is at most max(ZERO_ATOL, ZERO_RTOL * max of its curve).
# Identical states give exactly 0 with an exact transport solver, so these only absorb
# rounding. ZERO_RTOL is small so that a first divergence many orders of magnitude
# below the final one still counts as present.
ZERO_ATOL = 1e-12
ZERO_RTOL = 1e-9


def first_divergence_step(
    curve: np.ndarray, *, atol: float = ZERO_ATOL, rtol: float = ZERO_RTOL
) -> int | None:
    """Return the first index whose divergence exceeds the zero tolerance, or None if none does."""
    values = np.abs(np.asarray(curve, dtype=float))
    tolerance = max(atol, rtol * float(values.max(initial=0.0)))
    nonzero = np.flatnonzero(values > tolerance)
    return int(nonzero[0]) if nonzero.size else None


def switch_lag_test(
    curves: Mapping[int, np.ndarray],
    cfg: ValidationConfig,
    *,
    atol: float = ZERO_ATOL,
    rtol: float = ZERO_RTOL,
) -> TestResult:
    """Run test 3: in a switched trajectory, divergence is zero before the switch and present at it.

    `curves[k]` is the per-step divergence [S] between the full model's trajectory and a
    trajectory that uses the full model for steps 0..k-1 and the leave-one-out model from
    step k on, with the same noise. The state after step k is the first one the
    leave-one-out model touches, so the first nonzero divergence must be at index k.
    The metric is the share of switch steps where it is.

    NOTE: trajectories stored in float16 (`SampleConfig.store_dtype`) can round a small
    first difference away, and that shows up here as a late first divergence.
    """
    if not curves:
        raise ValueError("switch curves are empty; pass {switch step: divergence array [S]}")

    first_steps: dict[int, int | None] = {}
    checked: dict[int, np.ndarray] = {}
    for switch_step, curve in sorted(curves.items(), key=lambda item: int(item[0])):
        values = np.asarray(curve, dtype=float)
        if values.ndim != 1 or not 0 <= int(switch_step) < values.size:
            raise ValueError(
                f"switch step {switch_step} needs a 1-D divergence curve longer than the step, "
                f"got shape {values.shape}"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(f"divergence curve of switch step {switch_step} contains NaN or inf")
        checked[int(switch_step)] = values
        first_steps[int(switch_step)] = first_divergence_step(values, atol=atol, rtol=rtol)

    correct = [step for step, first in first_steps.items() if first == step]
    share = len(correct) / len(first_steps)
    details = {
        "first_divergence_step": {str(step): first for step, first in first_steps.items()},
        "wrong_lag": [step for step in first_steps if step not in correct],
        "zero_atol": atol,
        "zero_rtol": rtol,
        "curves": {str(step): values.tolist() for step, values in checked.items()},
    }
    return make_result(3, share, cfg.granger_lag_share, share >= cfg.granger_lag_share, details)


def granger_causality_test(
    prediction_differences: Sequence[np.ndarray],
    divergences: Sequence[np.ndarray],
    cfg: ValidationConfig,
    *,
    maxlag: int = 1,
) -> TestResult:
    """Run test 4: the models' prediction difference Granger-causes the trajectory divergence.

    Each pair is one trajectory (a prompt and seed of a leave-one-out comparison): a
    prediction-difference series [S] and a divergence series [S]. Divergence grows along
    the trajectory, so both series are first-differenced to remove that trend before the
    test. The test is statsmodels' ssr F-test at lag `maxlag` only.

    Granger causality tests only lagged effects. The prediction at step i moves the state
    after step i within the same step, so with this indexing a lag-1 test checks whether
    the prediction difference at step i-1 still helps predict the divergence at step i
    once the divergence's own past is known. One step is the shortest lag and leaves the
    most degrees of freedom: statsmodels needs more than 3*maxlag + 1 observations after
    differencing, so 8 sampling steps allow lag 1 only.

    Pairs that are too short or constant, or that the OLS fits perfectly, are skipped
    with a reason. The remaining p-values are combined with Fisher's method.
    NOTE: Fisher's method assumes independent tests, but trajectories that share an
    adapter are correlated, so the combined p is optimistic.
    """
    if len(prediction_differences) != len(divergences):
        raise ValueError(
            f"need one divergence series per prediction-difference series, got "
            f"{len(prediction_differences)} and {len(divergences)}"
        )
    if maxlag < 1:
        raise ValueError(f"maxlag must be >= 1, got {maxlag}")

    p_values: list[float] = []
    skipped: list[dict] = []
    for index, (cause, effect) in enumerate(zip(prediction_differences, divergences)):
        reason, p_value = _granger_p(np.asarray(cause, dtype=float), np.asarray(effect, dtype=float), maxlag)
        if reason is None:
            p_values.append(p_value)
        else:
            skipped.append({"pair": index, "reason": reason})

    details = {
        "maxlag": maxlag,
        "n_pairs": len(divergences),
        "n_tested": len(p_values),
        "skipped": skipped,
        "p_values": p_values,
        "transform": "first differences",
    }
    if not p_values:
        return not_run(4, cfg.granger_p, "every series pair was skipped; see details['skipped']", **details)

    combined = float(stats.combine_pvalues(p_values, method="fisher").pvalue)
    return make_result(4, combined, cfg.granger_p, combined < cfg.granger_p, details)


def _granger_p(cause: np.ndarray, effect: np.ndarray, maxlag: int) -> tuple[str | None, float]:
    """Return (skip reason, p) for 'cause Granger-causes effect' on first differences."""
    if cause.ndim != 1 or effect.ndim != 1 or cause.shape != effect.shape:
        raise ValueError(
            f"a prediction-difference series and its divergence series must both be 1-D of equal "
            f"length, got shapes {cause.shape} and {effect.shape}"
        )
    if not (np.all(np.isfinite(cause)) and np.all(np.isfinite(effect))):
        return "series contains NaN or inf", float("nan")

    cause_diff, effect_diff = np.diff(cause), np.diff(effect)
    needed = 3 * maxlag + 2
    if effect_diff.size < needed:
        return (
            f"{effect_diff.size} differenced steps, lag {maxlag} needs at least {needed}",
            float("nan"),
        )
    if np.ptp(cause_diff) == 0 or np.ptp(effect_diff) == 0:
        return "a differenced series is constant", float("nan")

    # statsmodels tests whether the second column Granger-causes the first.
    data = np.column_stack([effect_diff, cause_diff])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            outcome = grangercausalitytests(data, [maxlag])
    except InfeasibleTestError as error:
        return f"statsmodels could not compute the test: {error}", float("nan")

    p_value = float(outcome[maxlag][0]["ssr_ftest"][1])
    if not np.isfinite(p_value):
        return "the F-test p-value is not finite", float("nan")
    return None, p_value
