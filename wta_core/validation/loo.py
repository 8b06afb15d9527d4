"""Tests 9 to 11: leave-one-genre-out scores pick the right genre, stay specific and follow proximity."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

from wta_core.config import ValidationConfig
from wta_core.validation.result import TestResult, make_result
from wta_core.validation.scores import check_score_matrix, check_seed_scores, matched_unmatched


def _top1_matches(matrix: np.ndarray) -> np.ndarray:
    """Return, per prompt genre (column), whether its own removal scores strictly highest."""
    n_genres = matrix.shape[0]
    own = np.diag(matrix)
    others = np.where(np.eye(n_genres, dtype=bool), -np.inf, matrix)
    return own > others.max(axis=0)


def loo_top1_test(
    score_matrix, cfg: ValidationConfig, genres: Sequence[str] | None = None, seed_scores=None
) -> TestResult:
    """Run test 9: for each prompt genre, removing that genre gives the largest score.

    A tie with another removed genre counts as a miss. With `seed_scores` [R, G, G] the
    share is also reported per seed, which the Bradford Hill consistency criterion reads.
    """
    matrix = check_score_matrix(score_matrix, genres)
    n_genres = matrix.shape[0]
    names = list(genres) if genres is not None else [str(index) for index in range(n_genres)]
    matches = _top1_matches(matrix)
    share = float(matches.mean())

    top_removed = [names[index] for index in np.argmax(matrix, axis=0)]
    details = {
        "matches": int(matches.sum()),
        "n_genres": n_genres,
        "top_removed_genre": dict(zip(names, top_removed)),
        "missed_prompts": [name for name, hit in zip(names, matches) if not hit],
    }
    if seed_scores is not None:
        per_seed = check_seed_scores(seed_scores, n_genres)
        details["per_seed_top1_share"] = [float(_top1_matches(seed).mean()) for seed in per_seed]
    return make_result(9, share, cfg.loo_top1_share, share >= cfg.loo_top1_share, details)


def independence_test(
    score_matrix, control_scores, cfg: ValidationConfig, seed_scores=None
) -> TestResult:
    """Run test 10: unmatched leave-one-out scores stay below the retraining noise floor.

    The noise floor is the `cfg.independence_quantile` quantile (linear interpolation) of
    `control_scores`: scores of control adapters (full data, other training seeds)
    against the full adapter, one per control, prompt and sampling seed. It is fixed by
    the controls alone, before any leave-one-out score is looked at.

    What it measures: whether removing genre g moves prompts of other genres no more than
    a change of training seed does. Removing a genre changes the shared adapter weights
    for every prompt, so unmatched scores are expected to sit somewhat above pure seed
    noise even when attribution is specific. The threshold is not tuned to allow for that,
    so a low share here is a finding about leakage, not a bug.

    With `seed_scores` [R, G, G] each per-seed unmatched score is compared, which matches
    the unit of a control score (one adapter, prompt and seed). Without them the
    seed-averaged matrix is used; averaging shrinks the spread, so that comparison is
    more lenient than the per-seed one.
    """
    matrix = check_score_matrix(score_matrix)
    controls = np.asarray(control_scores, dtype=float).ravel()
    if controls.size == 0:
        raise ValueError("control scores are empty; pass one score per control adapter, prompt and seed")
    if not np.all(np.isfinite(controls)):
        raise ValueError("control scores contain NaN or infinite values")

    if seed_scores is not None:
        _, unmatched = matched_unmatched(check_seed_scores(seed_scores, matrix.shape[0]))
        source = "per-seed scores"
    else:
        _, unmatched = matched_unmatched(matrix)
        source = "mean score matrix"

    noise_floor = float(np.quantile(controls, cfg.independence_quantile))
    below = unmatched < noise_floor
    share = float(below.mean())
    details = {
        "noise_floor": noise_floor,
        "quantile": cfg.independence_quantile,
        "n_controls": int(controls.size),
        "n_unmatched": int(unmatched.size),
        "n_below": int(below.sum()),
        "source": source,
        "max_unmatched": float(unmatched.max()),
    }
    return make_result(10, share, cfg.independence_share, share >= cfg.independence_share, details)


def proximity_test(
    score_matrix, proximity, cfg: ValidationConfig, genres: Sequence[str] | None = None
) -> TestResult:
    """Run test 11: among unmatched pairs, genres closer in audio features score higher.

    `proximity[i, j]` is a distance between the feature centroids of genres i and j, in
    the same genre order as the score matrix and computed without any WTA score. The
    test takes the Spearman correlation of -distance with score over the G*(G-1)
    off-diagonal pairs and passes when rho > 0 and the two-sided p is below the threshold.

    Those pairs are not independent (each genre enters 2*(G-1) of them and a symmetric
    distance appears twice), so the Spearman p is optimistic. `details["mantel_p"]` is
    a one-sided permutation p that relabels the genres of the distance matrix, so it
    respects that dependence. It is reported but does not decide the verdict.
    """
    matrix = check_score_matrix(score_matrix, genres)
    distances = check_score_matrix(proximity, genres, name="proximity matrix")
    if distances.shape != matrix.shape:
        raise ValueError(
            f"proximity matrix has shape {distances.shape} but the score matrix has shape {matrix.shape}; "
            "both need the same genres in the same order"
        )
    _, scores = matched_unmatched(matrix)
    _, pair_distances = matched_unmatched(distances)

    details = {"n_pairs": int(scores.size)}
    if np.ptp(scores) == 0 or np.ptp(pair_distances) == 0:
        details["reason"] = "unmatched scores or distances are constant, so Spearman's rho is undefined"
        return make_result(11, float("nan"), cfg.proximity_spearman_p, False, details)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        spearman = stats.spearmanr(-pair_distances, scores)
    rho, p_value = float(spearman.statistic), float(spearman.pvalue)
    details["rho"] = rho
    details["mantel_p"] = _mantel_p(matrix, distances, cfg)
    details["genres"] = list(genres) if genres is not None else None
    passed = bool(rho > 0 and p_value < cfg.proximity_spearman_p)
    return make_result(11, p_value, cfg.proximity_spearman_p, passed, details)


def _mantel_p(matrix: np.ndarray, distances: np.ndarray, cfg: ValidationConfig) -> float:
    """Return the one-sided permutation p of Spearman's rho when genre labels of `distances` are shuffled."""
    n_genres = matrix.shape[0]
    off_diagonal = ~np.eye(n_genres, dtype=bool)
    score_ranks = stats.rankdata(matrix[off_diagonal])
    score_ranks = (score_ranks - score_ranks.mean()) / score_ranks.std()

    def rho(order, axis=-1):
        order = np.moveaxis(np.asarray(order), axis, -1)
        relabelled = distances[order[..., :, None], order[..., None, :]]
        closeness = -relabelled[..., off_diagonal]
        ranks = stats.rankdata(closeness, axis=-1)
        spread = ranks.std(axis=-1, keepdims=True)
        ranks = (ranks - ranks.mean(axis=-1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
        return (ranks * score_ranks).mean(axis=-1)

    outcome = stats.permutation_test(
        (np.arange(n_genres),),
        rho,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=cfg.permutation_resamples,
        alternative="greater",
        rng=np.random.default_rng(cfg.seed),
    )
    return float(outcome.pvalue)
