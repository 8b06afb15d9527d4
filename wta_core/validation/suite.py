"""The inputs of the eleven validation tests, and `run_all`, which runs every test it can."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from wta_core.config import ScoreConfig, ValidationConfig
from wta_core.validation.ablation import dose_response_test, noise_isolation_test
from wta_core.validation.granger import granger_causality_test, switch_lag_test
from wta_core.validation.loo import independence_test, loo_top1_test, proximity_test
from wta_core.validation.permutation import effect_size_test, permutation_test
from wta_core.validation.result import TestResult, not_run
from wta_core.validation.scm import ScmSpec, scm_tests

logger = logging.getLogger(__name__)


@dataclass
class ValidationInputs:
    """Outputs of one run that the validation tests read.

    A test whose input is None is reported as NOT RUN. `scm` defaults to the synthetic
    model, so tests 1 and 2 run unless it is set to None.

    Score matrices use rows = removed genre and columns = prompt genre, both in the order
    of `genres`, with G genres, R sampling seeds, K control scores and S sampling steps.
    """

    genres: Sequence[str] | None = None
    score_matrix: np.ndarray | None = None  # [G, G], mean over seeds; derived from seed_scores if None
    seed_scores: np.ndarray | None = None  # [R, G, G], one matrix per sampling seed
    control_scores: np.ndarray | None = None  # [K], control adapter versus full, per prompt and seed
    dose_fractions: Sequence[float] | None = None  # [F], 0 = full adapter, 1 = leave-one-out
    dose_scores: np.ndarray | None = None  # [F] or [F, R]
    noise_scores: Mapping[str, float] | None = None  # {prompt genre: score of the noise-corrupted adapter}
    noise_genre: str | None = None  # the genre whose clips were replaced by noise
    switch_curves: Mapping[int, np.ndarray] | None = None  # {switch step k: divergence [S]}
    prediction_differences: Sequence[np.ndarray] | None = None  # per trajectory, [S]
    divergences: Sequence[np.ndarray] | None = None  # per trajectory, [S], paired with the above
    proximity: np.ndarray | None = None  # [G, G] distances between genre feature centroids
    scm: ScmSpec | None = field(default_factory=ScmSpec)  # None skips tests 1 and 2
    score: ScoreConfig = field(default_factory=ScoreConfig)  # step weights and W1 method of the SCM

    def mean_score_matrix(self) -> np.ndarray | None:
        """Return `score_matrix`, else the mean of `seed_scores` over seeds, else None."""
        if self.score_matrix is not None:
            return np.asarray(self.score_matrix, dtype=float)
        if self.seed_scores is not None:
            scores = np.asarray(self.seed_scores, dtype=float)
            if scores.ndim != 3:
                raise ValueError(f"seed_scores must have shape [R, G, G], got {scores.shape}")
            return scores.mean(axis=0)
        return None


def run_all(inputs: ValidationInputs, cfg: ValidationConfig) -> list[TestResult]:
    """Run the eleven tests in order; a test without its input is NOT RUN with the reason.

    Malformed inputs (wrong shapes, NaN) raise ValueError, because a wrong array is a
    bug in the caller, not a result.
    """
    matrix = inputs.mean_score_matrix()
    missing_matrix = "no leave-one-genre-out score matrix (score_matrix or seed_scores) was given"
    results: list[TestResult] = []

    if inputs.scm is None:
        reason = "the synthetic model was switched off (inputs.scm is None)"
        results += [not_run(1, cfg.scm_parent_recovery, reason), not_run(2, cfg.scm_false_positive_rate, reason)]
    else:
        results += scm_tests(cfg, inputs.scm, inputs.score)

    if inputs.switch_curves is None:
        results.append(not_run(3, cfg.granger_lag_share, "no switched-trajectory divergence curves were given"))
    else:
        results.append(switch_lag_test(inputs.switch_curves, cfg))

    if inputs.prediction_differences is None or inputs.divergences is None:
        results.append(not_run(4, cfg.granger_p, "no prediction-difference and divergence series were given"))
    else:
        results.append(granger_causality_test(inputs.prediction_differences, inputs.divergences, cfg))

    if inputs.noise_scores is None or inputs.noise_genre is None:
        results.append(not_run(5, cfg.noise_rank, "no noise-ablation scores or corrupted genre were given"))
    else:
        results.append(noise_isolation_test(inputs.noise_scores, inputs.noise_genre, cfg))

    if inputs.dose_fractions is None or inputs.dose_scores is None:
        results.append(not_run(6, cfg.dose_pearson_r, "no dose fractions and scores were given"))
    else:
        results.append(dose_response_test(inputs.dose_fractions, inputs.dose_scores, cfg))

    if matrix is None:
        results.append(not_run(7, cfg.permutation_p, missing_matrix))
        results.append(not_run(8, cfg.cohens_d, missing_matrix))
        results.append(not_run(9, cfg.loo_top1_share, missing_matrix))
    else:
        results.append(permutation_test(matrix, cfg, inputs.genres))
        results.append(effect_size_test(matrix, cfg, inputs.seed_scores))
        results.append(loo_top1_test(matrix, cfg, inputs.genres, inputs.seed_scores))

    if matrix is None or inputs.control_scores is None:
        reason = missing_matrix if matrix is None else "no control replicate scores were given"
        results.append(not_run(10, cfg.independence_share, reason))
    else:
        results.append(independence_test(matrix, inputs.control_scores, cfg, inputs.seed_scores))

    if matrix is None or inputs.proximity is None:
        reason = missing_matrix if matrix is None else "no genre proximity matrix was given"
        results.append(not_run(11, cfg.proximity_spearman_p, reason))
    else:
        results.append(proximity_test(matrix, inputs.proximity, cfg, inputs.genres))

    for result in results:
        if result.passed is None:
            logger.warning("validation test %d (%s) not run: %s", result.test_id, result.name, result.details["reason"])
        else:
            logger.info(
                "validation test %d (%s): %s, value %.4g, threshold %s",
                result.test_id, result.name, result.verdict, result.value, result.threshold,
            )
    return results
