"""Tests 7 and 8: matched (removed genre = prompt genre) scores stand out from unmatched ones."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from wta_core.config import ValidationConfig
from wta_core.validation.result import TestResult, make_result
from wta_core.validation.scores import check_score_matrix, check_seed_scores, matched_unmatched


def diagonal_contrast(matrix: np.ndarray) -> float:
    """Return mean(diagonal) - mean(off-diagonal) of a [G, G] score matrix."""
    matched, unmatched = matched_unmatched(np.asarray(matrix, dtype=float))
    return float(matched.mean() - unmatched.mean())


def permutation_test(
    score_matrix, cfg: ValidationConfig, genres: Sequence[str] | None = None
) -> TestResult:
    """Run test 7: is the matched-minus-unmatched contrast larger than under random pairings?

    `score_matrix` is [G removed genres, G prompt genres], usually the mean over seeds.
    The null hypothesis is that which removed genre goes with which prompt genre does not
    matter, so the null distribution permutes the rows (the pairing) and recomputes
    mean(diagonal) - mean(off-diagonal). The test is one-sided (greater). When G! is at
    most `cfg.permutation_resamples` every pairing is enumerated and the smallest
    attainable p is 1/G!, for G = 3 that is 1/6. Otherwise `cfg.permutation_resamples`
    random pairings are drawn with `cfg.seed` and the smallest p is 1/(resamples + 1).
    """
    matrix = check_score_matrix(score_matrix, genres)
    n_genres = matrix.shape[0]
    columns = np.arange(n_genres)
    total = matrix.sum()
    n_unmatched = n_genres * (n_genres - 1)

    def contrast(row_order, axis=-1):
        # Row permutations keep the total, so only the diagonal sum has to be recomputed.
        row_order = np.moveaxis(np.asarray(row_order), axis, -1)
        diagonal_sum = matrix[row_order, columns].sum(axis=-1)
        return diagonal_sum / n_genres - (total - diagonal_sum) / n_unmatched

    outcome = stats.permutation_test(
        (columns,),
        contrast,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=cfg.permutation_resamples,
        alternative="greater",
        rng=np.random.default_rng(cfg.seed),
    )
    pairings = math.factorial(n_genres)
    exact = pairings <= cfg.permutation_resamples
    min_p = 1.0 / pairings if exact else 1.0 / (cfg.permutation_resamples + 1)
    p_value = float(outcome.pvalue)

    details = {
        "statistic": float(outcome.statistic),
        "n_genres": n_genres,
        "exact": exact,
        "n_pairings": pairings if exact else cfg.permutation_resamples,
        "min_attainable_p": min_p,
        "genres": list(genres) if genres is not None else None,
        "score_matrix": matrix.tolist(),
    }
    if min_p >= cfg.permutation_p:
        details["note"] = (
            f"with {n_genres} genres the smallest attainable p is {min_p:.3g}, which is not below "
            f"the threshold {cfg.permutation_p:g}, so this test cannot pass at this size"
        )
    return make_result(7, p_value, cfg.permutation_p, p_value < cfg.permutation_p, details)


def effect_size_test(score_matrix, cfg: ValidationConfig, seed_scores=None) -> TestResult:
    """Run test 8: Cohen's d of matched against unmatched scores, with the pooled standard deviation.

    With `seed_scores` [R, G, G] every seed's score is one observation (R*G matched,
    R*G*(G-1) unmatched); otherwise the [G, G] `score_matrix` is used. d is +-inf when
    both groups are constant but differ, and NaN (a fail) when they are constant and equal.
    """
    matrix = check_score_matrix(score_matrix)
    if seed_scores is not None:
        observations = check_seed_scores(seed_scores, matrix.shape[0])
        source = "per-seed scores"
    else:
        observations = matrix
        source = "mean score matrix"
    matched, unmatched = matched_unmatched(observations)

    difference = float(matched.mean() - unmatched.mean())
    n_matched, n_unmatched = matched.size, unmatched.size
    # ddof=1 needs two values per group; a single matched value contributes no variance.
    var_matched = float(matched.var(ddof=1)) if n_matched > 1 else 0.0
    var_unmatched = float(unmatched.var(ddof=1)) if n_unmatched > 1 else 0.0
    dof = max(n_matched + n_unmatched - 2, 1)
    pooled_sd = math.sqrt(((n_matched - 1) * var_matched + (n_unmatched - 1) * var_unmatched) / dof)

    if pooled_sd > 0:
        d = difference / pooled_sd
    elif difference != 0:
        d = math.copysign(math.inf, difference)
    else:
        d = math.nan

    details = {
        "source": source,
        "n_matched": n_matched,
        "n_unmatched": n_unmatched,
        "mean_matched": float(matched.mean()),
        "mean_unmatched": float(unmatched.mean()),
        "pooled_sd": pooled_sd,
    }
    passed = bool(d >= cfg.cohens_d)  # NaN compares False, so an undefined d fails
    return make_result(8, d, cfg.cohens_d, passed, details)
