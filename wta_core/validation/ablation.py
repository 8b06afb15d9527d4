"""Tests 5 and 6: the score follows a known corruption and grows with the amount removed."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from wta_core.config import ValidationConfig
from wta_core.validation.result import TestResult, make_result


def noise_isolation_test(
    scores: Mapping[str, float], corrupted_genre: str, cfg: ValidationConfig
) -> TestResult:
    """Run test 5: rank the corrupted genre among the scores of a noise-corrupted adapter.

    `scores[genre]` is the WTA score between the adapter trained with `corrupted_genre`'s
    clips replaced by noise and the full adapter, for prompts of `genre`. Rank 1 is the
    largest score. A tie counts against the corrupted genre, so its rank is one plus the
    number of other genres scoring at least as high.
    """
    if corrupted_genre not in scores:
        raise ValueError(
            f"corrupted genre {corrupted_genre!r} has no score; scores cover {sorted(scores)}. "
            "Pass the noise-ablation score of every prompt genre, including the corrupted one."
        )
    values = {genre: float(score) for genre, score in scores.items()}
    bad = [genre for genre, score in values.items() if not np.isfinite(score)]
    if bad:
        raise ValueError(f"noise-ablation scores must be finite, got non-finite scores for {bad}")

    own = values[corrupted_genre]
    rank = 1 + sum(1 for genre, score in values.items() if genre != corrupted_genre and score >= own)
    ordered = sorted(values, key=values.get, reverse=True)
    details = {
        "corrupted_genre": corrupted_genre,
        "n_genres": len(values),
        "scores": values,
        "ranking": ordered,
    }
    return make_result(5, rank, cfg.noise_rank, rank <= cfg.noise_rank, details)


def dose_response_test(
    fractions: Sequence[float], scores: Sequence[float] | np.ndarray, cfg: ValidationConfig
) -> TestResult:
    """Run test 6: the score rises linearly and monotonically with the removed fraction.

    `fractions` are the removed shares of one genre's clips, 0 for the full adapter (its
    score against itself or a control) and 1 for the leave-one-out adapter. `scores` has
    shape [F] or [F, R]; with R replicates (seeds), their mean is used. Passes when
    Pearson's r reaches the threshold and the mean scores never decrease as the fraction
    grows.
    """
    x = np.asarray(fractions, dtype=float)
    y = np.asarray(scores, dtype=float)
    if y.ndim == 2:
        y = y.mean(axis=1)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"dose fractions and scores must both have length F, got shapes {x.shape} and "
            f"{np.shape(scores)}; pass one score (or one row of replicate scores) per fraction"
        )
    if x.size < 3:
        raise ValueError(f"dose-response needs at least 3 fractions, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("dose fractions and scores must be finite")
    if np.unique(x).size != x.size:
        raise ValueError(f"dose fractions must be distinct, got {x.tolist()}")

    order = np.argsort(x)
    x, y = x[order], y[order]
    steps = np.diff(y)
    monotone = bool(np.all(steps >= 0))
    details = {
        "fractions": x.tolist(),
        "scores": y.tolist(),
        "monotone": monotone,
        "decreasing_steps": [[float(x[i]), float(x[i + 1])] for i in np.flatnonzero(steps < 0)],
    }

    if np.ptp(y) == 0:
        details["reason"] = "scores are constant, so Pearson r is undefined and no dose effect exists"
        return make_result(6, float("nan"), cfg.dose_pearson_r, False, details)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson = stats.pearsonr(x, y)
    r = float(pearson.statistic)
    details["pearson_p"] = float(pearson.pvalue)
    passed = bool(r >= cfg.dose_pearson_r and monotone)
    return make_result(6, r, cfg.dose_pearson_r, passed, details)
