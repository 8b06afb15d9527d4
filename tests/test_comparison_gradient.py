"""TracIn-LoRA gradient attribution against a brute-force loop of torch.autograd gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny_denoiser import (  # single_thread is an autouse fixture
    LATENT_SHAPE,
    TINY_LORA,
    prompt_embeddings,
    randomise_lora_b,
    single_thread,
    tiny_dataset,
    tiny_model,
)
from wta_core.comparison.gradient import (
    lora_parameter_names,
    loss_gradients,
    timestep_noise,
    tracin_attribution,
    tracin_clip_scores,
)
from wta_core.diffusion import noisy_sample_and_target, training_scheduler
from wta_core.lora import attach_lora
from wta_core.model import Denoiser

TIMESTEPS = (100, 600)
SEED = 3
CLIPS, CLIP_EMBEDDINGS = tiny_dataset(clips=7, seed=1)
CLIP_GENRES = ["a", "a", "a", "b", "b", "c", "c"]
GENRES = ("a", "b", "c")
PROMPTS = prompt_embeddings(2)
GENERATED = torch.randn(2, 2, *LATENT_SHAPE, generator=torch.Generator().manual_seed(11))


@pytest.fixture(scope="module")
def denoiser():
    model = attach_lora(tiny_model(), TINY_LORA)
    randomise_lora_b(model)
    return Denoiser(model).eval()


def _brute_force_gradient(denoiser, clean: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """The LoRA gradient of one example's loss, by autograd on a plain forward pass."""
    names = lora_parameter_names(denoiser)
    parameters = dict(denoiser.named_parameters())
    noise = timestep_noise(TIMESTEPS, LATENT_SHAPE, SEED)
    steps = torch.tensor(TIMESTEPS)
    noisy, target = noisy_sample_and_target(training_scheduler(), clean.expand(len(TIMESTEPS), -1, -1), noise, steps)
    prediction = denoiser(noisy, steps, condition.expand(len(TIMESTEPS), -1))
    loss = torch.nn.functional.mse_loss(prediction, target)
    gradients = torch.autograd.grad(loss, [parameters[name] for name in names])
    return torch.cat([gradient.reshape(-1) for gradient in gradients])


def test_gradients_match_autograd(denoiser):
    noise = timestep_noise(TIMESTEPS, LATENT_SHAPE, SEED)
    vectorised = loss_gradients(denoiser, CLIPS, CLIP_EMBEDDINGS, TIMESTEPS, noise, chunk_size=3)
    for index in range(CLIPS.shape[0]):
        expected = _brute_force_gradient(denoiser, CLIPS[index], CLIP_EMBEDDINGS[index])
        torch.testing.assert_close(vectorised[index], expected, rtol=1e-4, atol=1e-7)


def test_dot_products_match_loop(denoiser):
    scores = tracin_clip_scores(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, TIMESTEPS, SEED, chunk_size=4)
    expected = np.zeros((CLIPS.shape[0], 2))
    for clip in range(CLIPS.shape[0]):
        clip_gradient = _brute_force_gradient(denoiser, CLIPS[clip], CLIP_EMBEDDINGS[clip])
        for prompt in range(2):
            for seed in range(2):
                test_gradient = _brute_force_gradient(denoiser, GENERATED[prompt, seed], PROMPTS[prompt])
                expected[clip, prompt] += float(clip_gradient @ test_gradient) / 2
    assert scores.shape == (7, 2)
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


def test_scores_nonzero(denoiser):
    scores = tracin_clip_scores(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, TIMESTEPS, SEED)
    assert np.abs(scores).max() > 0


def test_chunk_size_invariant(denoiser):
    whole = tracin_clip_scores(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, TIMESTEPS, SEED, chunk_size=16)
    single = tracin_clip_scores(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, TIMESTEPS, SEED, chunk_size=1)
    np.testing.assert_allclose(whole, single, rtol=1e-5)


def test_genre_sum_and_mean(denoiser):
    clip_scores = tracin_clip_scores(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, TIMESTEPS, SEED)
    summed = tracin_attribution(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, CLIP_GENRES, GENRES,
                                ("a", "b"), TIMESTEPS, SEED)
    averaged = tracin_attribution(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, CLIP_GENRES, GENRES,
                                  ("a", "b"), TIMESTEPS, SEED, normalise="mean")
    np.testing.assert_allclose(summed.matrix[0], clip_scores[:3].sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(averaged.matrix[2], clip_scores[5:].mean(axis=0), rtol=1e-6)
    assert summed.method == "tracin-lora"
    assert summed.retrainings == 0
    assert summed.matrix.shape == (3, 2)


def test_frozen_adapter_still_scored(denoiser):
    # load_adapter returns LoRA weights with requires_grad False; they are found by name.
    for name, parameter in denoiser.named_parameters():
        if ".lora_" in name:
            parameter.requires_grad_(False)
    try:
        scores = tracin_clip_scores(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, TIMESTEPS, SEED)
    finally:
        for name, parameter in denoiser.named_parameters():
            if ".lora_" in name:
                parameter.requires_grad_(True)
    assert np.abs(scores).max() > 0


def test_no_lora_raises():
    with pytest.raises(ValueError, match="no LoRA weights"):
        lora_parameter_names(Denoiser(tiny_model()))


def test_bad_timestep_raises(denoiser):
    with pytest.raises(ValueError, match="timesteps"):
        tracin_clip_scores(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, (1000,), SEED)


def test_genre_without_clips_raises(denoiser):
    with pytest.raises(ValueError, match="no training clip"):
        tracin_attribution(denoiser, GENERATED, PROMPTS, CLIPS, CLIP_EMBEDDINGS, CLIP_GENRES, ("a", "b", "z"),
                           ("a", "b"), TIMESTEPS, SEED)
