"""Tests 1 and 2 and the synthetic model behind them: closed-form denoiser, exact removal, parents."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wta_core.config import ScoreConfig, ValidationConfig
from wta_core.validation import scm
from wta_core.validation.scm import ScmRun, ScmSpec, TrainingSet

CFG = ValidationConfig()
SPEC = ScmSpec()


@pytest.fixture(scope="module")
def default_run() -> ScmRun:
    return scm.run_scm(SPEC, CFG.seed)


def _model(spec: ScmSpec = SPEC, seed: int = 0):
    training = scm.make_training_set(spec, seed)
    counts = scm.full_counts(spec, seed)
    return training, counts, scm.noise_levels(spec)


def _final_frames(spec, seed, generation, training, counts, sigmas):
    prompt = generation % spec.n_clusters
    prior = scm.prompt_prior(counts, training.labels, prompt, spec.prompt_leak)
    states, _, final_weights = scm.sample(scm.initial_noise(spec, seed, generation), sigmas, training.points, prior)
    return states, final_weights


def test_denoiser_small_noise_returns_nearest_point():
    training, counts, _ = _model()
    target = 5
    x = training.points[target][None, :] + 0.01
    mean, weights = scm.denoise(x, 1e-3, training.points, counts)
    np.testing.assert_allclose(mean[0], training.points[target], atol=1e-12)
    assert weights[0].argmax() == target


def test_denoiser_large_noise_returns_prior_mean():
    training, counts, _ = _model()
    mean, _ = scm.denoise(np.zeros((1, SPEC.dim)), 1e6, training.points, counts)
    expected = (counts[:, None] * training.points).sum(axis=0) / counts.sum()
    np.testing.assert_allclose(mean[0], expected, atol=1e-9)


def test_denoiser_removed_point_gets_zero_weight():
    training, counts, _ = _model()
    counts = counts.copy()
    counts[2] = 0.0
    _, weights = scm.denoise(training.points[2][None, :], 0.05, training.points, counts)
    assert weights[0, 2] == 0.0
    assert weights[0].sum() == pytest.approx(1.0)


def test_sampler_ends_on_training_points():
    training, counts, sigmas = _model()
    states, _ = _final_frames(SPEC, 0, 0, training, counts, sigmas)
    distances = np.linalg.norm(states[-1][:, None, :] - training.points[None], axis=-1).min(axis=1)
    assert distances.max() < 1e-6


def test_sampler_is_deterministic():
    training, counts, sigmas = _model()
    first, _ = _final_frames(SPEC, 0, 3, training, counts, sigmas)
    second, _ = _final_frames(SPEC, 0, 3, training, counts, sigmas)
    np.testing.assert_array_equal(first, second)


def test_removal_changes_only_nearby_generations():
    training, counts, sigmas = _model()
    removed = 0  # a point of cluster 0
    loo_counts = counts.copy()
    loo_counts[removed] = 0.0
    for generation in range(SPEC.n_generations):
        full, final_weights = _final_frames(SPEC, 0, generation, training, counts, sigmas)
        loo, _ = _final_frames(SPEC, 0, generation, training, loo_counts, sigmas)
        change = np.abs(full[-1] - loo[-1]).max()
        if (final_weights.argmax(axis=1) == removed).any():
            assert change > 0.05, f"generation {generation} used the point but did not change"
        elif training.labels[removed] != generation % SPEC.n_clusters:
            assert change == 0.0, f"generation {generation} of another cluster changed by {change}"


def test_parents_hold_final_mass():
    final_weights = np.zeros((4, 3))
    final_weights[[0, 1, 2], 0] = 1.0
    final_weights[3, 2] = 1.0
    parents = scm.find_parents(final_weights, parent_mass=0.2)
    assert parents.tolist() == [0, 2]


def test_default_parents_are_prompt_cluster(default_run):
    for generation, parents in enumerate(default_run.parents):
        prompt = default_run.prompts[generation]
        own = np.flatnonzero(default_run.training_set.labels == prompt)
        assert set(own) <= set(parents.tolist())


def test_controls_give_nonzero_null(default_run):
    assert default_run.null_scores.shape == (SPEC.n_generations, SPEC.n_controls)
    assert np.all(default_run.null_scores > 0)


def test_recovery_passes_on_default_model(default_run):
    result = scm.parent_recovery_test(default_run, CFG)
    assert result.passed is True
    assert result.value == 1.0
    assert result.details["n_scored"] == SPEC.n_generations


def test_false_positives_pass_on_default_model(default_run):
    result = scm.false_positive_test(default_run, CFG)
    assert result.passed is True
    assert result.value == 0.0
    assert result.details["max_non_parent_score"] < result.details["noise_floor"]


def test_false_positives_fail_with_independent_loo_seeds():
    # Each leave-one-out model gets its own training seed, so non-parent scores carry
    # seed noise like the controls, and about 1 - quantile of them exceed the floor.
    run = scm.run_scm(dataclasses.replace(SPEC, loo_shares_seed=False), CFG.seed)
    result = scm.false_positive_test(run, CFG)
    assert result.passed is False
    assert result.value > 0.0


def _constructed_run(scores: np.ndarray, parents: list[list[int]], null: np.ndarray) -> ScmRun:
    n_points = scores.shape[1]
    training = TrainingSet(points=np.zeros((n_points, 2)), labels=np.zeros(n_points, dtype=int))
    return ScmRun(
        scores=scores,
        null_scores=null,
        parents=[np.asarray(indices) for indices in parents],
        prompts=np.zeros(len(parents), dtype=int),
        training_set=training,
    )


def test_recovery_fails_when_non_parent_outranks():
    scores = np.array([[5.0, 4.0, 1.0, 0.0], [5.0, 0.5, 1.0, 0.0]])
    run = _constructed_run(scores, [[0, 1], [0, 1]], np.full((2, 3), 0.1))
    result = scm.parent_recovery_test(run, CFG)
    assert result.passed is False
    assert result.value == 0.5


def test_recovery_counts_tie_as_miss():
    scores = np.array([[5.0, 1.0, 1.0]])
    run = _constructed_run(scores, [[0, 1]], np.full((1, 3), 0.1))
    assert scm.parent_recovery_test(run, CFG).value == 0.0


def test_recovery_not_run_without_non_parents():
    scores = np.array([[5.0, 4.0]])
    run = _constructed_run(scores, [[0, 1]], np.full((1, 3), 0.1))
    result = scm.parent_recovery_test(run, CFG)
    assert result.passed is None
    assert "non-parents" in result.details["reason"]


def test_false_positives_fail_above_floor():
    scores = np.array([[5.0, 0.5, 0.0]])
    run = _constructed_run(scores, [[0]], np.full((1, 4), 0.1))
    result = scm.false_positive_test(run, CFG)
    assert result.passed is False
    assert result.value == 0.5


def test_false_positives_not_run_all_parents():
    scores = np.array([[5.0, 4.0]])
    run = _constructed_run(scores, [[0, 1]], np.full((1, 3), 0.1))
    assert scm.false_positive_test(run, CFG).passed is None


def test_scm_tests_returns_both_results():
    small = dataclasses.replace(SPEC, n_generations=4, n_controls=4)
    results = scm.scm_tests(CFG, small)
    assert [result.test_id for result in results] == [1, 2]


def test_spec_rejects_bad_noise_levels():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        ScmSpec(sigma_min=1.0, sigma_max=0.5)


def test_predicted_clean_target_runs():
    small = dataclasses.replace(SPEC, n_generations=4, n_controls=4)
    score = dataclasses.replace(ScoreConfig(), target="predicted_clean")
    run = scm.run_scm(small, CFG.seed, score)
    assert scm.parent_recovery_test(run, CFG).passed is True
