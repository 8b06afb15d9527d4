"""Ground truth and metrics of the method comparison, on constructed score matrices with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wta_core.comparison.method import MethodScores
from wta_core.comparison.metrics import (
    LdsInputs,
    RetrainingEffect,
    compare_methods,
    evaluate_method,
    lds_masks,
    linear_datamodeling_score,
    output_divergence,
    spearman_with_effect,
    top1_effect,
    top1_prompt_genre,
)
from wta_core.errors import ConfigError

GENRES = tuple(f"genre{index}" for index in range(10))


def _diagonal_dominant(n: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(0.0, 1.0, (n, n))
    np.fill_diagonal(matrix, 5.0)
    return matrix


def _scores(matrix: np.ndarray, method: str = "m") -> MethodScores:
    return MethodScores(method, matrix, GENRES, GENRES, seconds=1.0, retrainings=0)


def _additive_case(seed: int = 0, k: int = 40, noise: float = 0.0):
    """True per-genre effects [G, P], removal masks [k, G] and the additive divergences [k, P]."""
    rng = np.random.default_rng(seed)
    effects = rng.uniform(0.1, 2.0, (len(GENRES), len(GENRES)))
    masks = lds_masks(GENRES, k, seed)
    divergence = masks.astype(float) @ effects + noise * rng.standard_normal((k, len(GENRES)))
    return effects, masks, divergence


def test_top1_diagonal_is_one():
    hits = top1_prompt_genre(_diagonal_dominant(), GENRES, GENRES)
    assert hits.mean() == 1.0


def test_top1_random_is_low():
    matrix = np.random.default_rng(3).uniform(0.0, 1.0, (10, 10))
    hits = top1_prompt_genre(matrix, GENRES, GENRES)
    assert hits.mean() <= 0.3


def test_top1_tie_is_miss():
    matrix = np.eye(3)
    matrix[1, 0] = 1.0
    hits = top1_prompt_genre(matrix, GENRES[:3], GENRES[:3])
    assert not hits[0]
    assert hits[1]
    assert hits[2]


def test_top1_follows_prompt_order():
    # Prompts listed in reverse genre order: the anti-diagonal holds each prompt's own genre.
    matrix = np.fliplr(np.eye(4)) + 0.1
    hits = top1_prompt_genre(matrix, GENRES[:4], GENRES[:4][::-1])
    assert hits.all()


def test_top1_unknown_prompt_genre():
    with pytest.raises(ValueError, match="not among the scored genres"):
        top1_prompt_genre(np.eye(2), ["a", "b"], ["a", "c"])


def test_top1_effect_matches_argmax():
    effect = _diagonal_dominant(seed=1)
    method = effect.copy()
    method[:, 0] = 0.0
    method[3, 0] = 1.0  # prompt 0 now points to genre 3, whose effect is not the largest
    hits = top1_effect(method, effect)
    assert not hits[0]
    assert hits[1:].all()


def test_spearman_identical_is_one():
    matrix = _diagonal_dominant()
    assert spearman_with_effect(matrix, matrix) == pytest.approx(1.0)


def test_spearman_reversed_is_minus_one():
    matrix = _diagonal_dominant()
    assert spearman_with_effect(-matrix, matrix) == pytest.approx(-1.0)


def test_spearman_constant_is_nan():
    assert math.isnan(spearman_with_effect(np.ones((3, 3)), _diagonal_dominant(3)))


def test_masks_shape_and_sizes():
    masks = lds_masks(GENRES, 16, seed=0)
    assert masks.shape == (16, 10)
    assert masks.dtype == bool
    assert set(masks.sum(axis=1).tolist()) == {5}


def test_masks_distinct():
    masks = lds_masks(GENRES, 64, seed=0)
    assert len({row.tobytes() for row in masks}) == 64


def test_masks_deterministic():
    assert np.array_equal(lds_masks(GENRES, 8, seed=4), lds_masks(GENRES, 8, seed=4))


def test_masks_seed_changes_draw():
    assert not np.array_equal(lds_masks(GENRES, 8, seed=4), lds_masks(GENRES, 8, seed=5))


def test_masks_odd_genres_use_both_halves():
    masks = lds_masks(["a", "b", "c"], 6, seed=0)
    assert sorted(masks.sum(axis=1).tolist()) == [1, 1, 1, 2, 2, 2]
    assert len({row.tobytes() for row in masks}) == 6


def test_masks_too_many_raise():
    with pytest.raises(ConfigError, match="at most 6"):
        lds_masks(["a", "b", "c"], 7, seed=0)


def test_masks_zero_is_empty():
    assert lds_masks(GENRES, 0, seed=0).shape == (0, 10)


def test_lds_true_effects_near_one():
    effects, masks, divergence = _additive_case(noise=0.01)
    lds, per_prompt = linear_datamodeling_score(effects, masks, divergence)
    assert lds > 0.95
    assert per_prompt.shape == (10,)


def test_lds_exact_effects_is_one():
    effects, masks, divergence = _additive_case()
    lds, _ = linear_datamodeling_score(effects, masks, divergence)
    assert lds == pytest.approx(1.0)


def test_lds_random_scores_low():
    effects, masks, divergence = _additive_case(noise=0.01)
    random_scores = np.random.default_rng(9).uniform(0.1, 2.0, effects.shape)
    lds, _ = linear_datamodeling_score(random_scores, masks, divergence)
    assert lds < 0.5


def test_lds_constant_prompt_left_out():
    effects, masks, divergence = _additive_case()
    divergence[:, 0] = 1.0
    lds, per_prompt = linear_datamodeling_score(effects, masks, divergence)
    assert math.isnan(per_prompt[0])
    assert lds == pytest.approx(1.0)


def test_lds_needs_three_subsets():
    effects, masks, divergence = _additive_case(k=2)
    with pytest.raises(ValueError, match="at least 3 subsets"):
        linear_datamodeling_score(effects, masks, divergence)


def test_output_divergence_known_distance():
    full = np.zeros((2, 3, 4))
    other = np.zeros((1, 2, 3, 4))
    other[0, 1, :, 0] = 3.0
    other[0, 1, 0, 1] = 4.0  # seed 0 of prompt 1 moves by 5, seeds 1 and 2 by 3
    divergence = output_divergence(full, other)
    assert divergence.shape == (1, 2)
    assert divergence[0, 0] == 0.0
    assert divergence[0, 1] == pytest.approx(11.0 / 3.0)


def test_evaluate_perfect_method():
    effect = RetrainingEffect(_diagonal_dominant(), GENRES, GENRES)
    evaluation = evaluate_method(_scores(effect.matrix.copy()), effect)
    assert evaluation.values["top1_prompt_genre"] == 1.0
    assert evaluation.values["top1_effect"] == 1.0
    assert evaluation.values["spearman_effect"] == pytest.approx(1.0)
    assert "lds" not in evaluation.values


def test_evaluate_with_lds():
    effects, masks, divergence = _additive_case()
    effect = RetrainingEffect(effects, GENRES, GENRES)
    evaluation = evaluate_method(_scores(effects), effect, LdsInputs(masks, divergence))
    assert evaluation.values["lds"] == pytest.approx(1.0)
    assert evaluation.details["lds"]["subsets"] == 40


def test_evaluate_label_mismatch():
    effect = RetrainingEffect(np.eye(2), ["a", "b"], ["a", "b"])
    scores = MethodScores("m", np.eye(2), ["b", "a"], ["a", "b"], seconds=0.0, retrainings=0)
    with pytest.raises(ValueError, match="same order"):
        evaluate_method(scores, effect)


def test_compare_rejects_duplicate_names():
    effect = RetrainingEffect(_diagonal_dominant(), GENRES, GENRES)
    with pytest.raises(ValueError, match="duplicates"):
        compare_methods([_scores(effect.matrix), _scores(effect.matrix)], effect)


def test_method_scores_reject_nan():
    matrix = np.eye(2)
    matrix[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MethodScores("m", matrix, ["a", "b"], ["a", "b"], seconds=0.0, retrainings=0)
