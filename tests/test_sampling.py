"""Noise schedule, training targets and the deterministic DDIM trajectory sampler."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_denoiser import (  # single_thread is an autouse fixture
    LATENT_SHAPE,
    TINY_LORA,
    prompt_embeddings,
    randomise_lora_b,
    single_thread,
    tiny_model,
)
from wta_core.diffusion import (
    initial_noise,
    noisy_sample_and_target,
    sample_switched_trajectory,
    sample_trajectory,
    sampling_scheduler,
    training_scheduler,
)
from wta_core.lora import attach_lora
from wta_core.model import Denoiser

STEPS = 4
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def base_denoiser() -> Denoiser:
    return Denoiser(tiny_model()).eval()


@pytest.fixture(scope="module")
def adapted_denoiser() -> Denoiser:
    """The tiny model with a LoRA adapter whose random B matrices change its output."""
    peft_model = attach_lora(tiny_model(), TINY_LORA)
    randomise_lora_b(peft_model)
    return Denoiser(peft_model).eval()


def _sample(denoiser, prompts: int = 3, guidance_scale: float = 3.0):
    return sample_trajectory(denoiser, prompt_embeddings(prompts), SEEDS, STEPS, guidance_scale, LATENT_SHAPE)


def test_trajectory_shapes(base_denoiser):
    trajectory = _sample(base_denoiser)
    assert trajectory.latents.shape == (3, 2, STEPS, *LATENT_SHAPE)
    assert trajectory.predicted_clean.shape == (3, 2, STEPS, *LATENT_SHAPE)
    assert trajectory.initial_noise.shape == (2, *LATENT_SHAPE)
    assert trajectory.timesteps.shape == (STEPS,)
    assert trajectory.seeds == SEEDS
    assert len(trajectory.prompts) == 3


def test_trajectory_float32_finite(base_denoiser):
    trajectory = _sample(base_denoiser)
    assert trajectory.latents.dtype == torch.float32
    assert torch.isfinite(trajectory.latents).all()
    assert torch.isfinite(trajectory.predicted_clean).all()


def test_timesteps_start_at_pure_noise(base_denoiser):
    timesteps = _sample(base_denoiser).timesteps
    assert int(timesteps[0]) == 999
    assert bool((timesteps[:-1] > timesteps[1:]).all())


def test_last_latent_is_predicted_clean(base_denoiser):
    # The last DDIM step goes to alpha_cumprod 1, where x_prev equals the x0 estimate.
    trajectory = _sample(base_denoiser)
    assert torch.allclose(trajectory.latents[:, :, -1], trajectory.predicted_clean[:, :, -1], atol=1e-6)


def test_same_inputs_identical_trajectories(adapted_denoiser):
    first, second = _sample(adapted_denoiser), _sample(adapted_denoiser)
    assert torch.equal(first.latents, second.latents)
    assert torch.equal(first.predicted_clean, second.predicted_clean)


def test_initial_noise_matches_seed():
    expected = torch.randn(*LATENT_SHAPE, generator=torch.Generator("cpu").manual_seed(1))
    assert torch.equal(initial_noise([0, 1], LATENT_SHAPE)[1], expected)


def test_initial_noise_independent_of_adapter(base_denoiser, adapted_denoiser):
    assert torch.equal(_sample(base_denoiser).initial_noise, _sample(adapted_denoiser).initial_noise)


def test_initial_noise_independent_of_prompts(base_denoiser):
    assert torch.equal(_sample(base_denoiser, prompts=1).initial_noise, _sample(base_denoiser, prompts=3).initial_noise)


def test_initial_noise_independent_of_other_seeds():
    assert torch.equal(initial_noise([5, 1], LATENT_SHAPE)[1], initial_noise([1], LATENT_SHAPE)[0])


def test_adapter_changes_trajectory(base_denoiser, adapted_denoiser):
    assert not torch.equal(_sample(base_denoiser).latents, _sample(adapted_denoiser).latents)


def test_prompts_change_trajectory(base_denoiser):
    trajectory = _sample(base_denoiser, prompts=2)
    assert not torch.equal(trajectory.latents[0], trajectory.latents[1])


def test_no_guidance_runs(base_denoiser):
    guided, unguided = _sample(base_denoiser, guidance_scale=3.0), _sample(base_denoiser, guidance_scale=1.0)
    assert torch.isfinite(unguided.latents).all()
    assert not torch.equal(guided.latents, unguided.latents)


def test_sampling_leaves_global_rng_alone(base_denoiser):
    before = torch.get_rng_state()
    _sample(base_denoiser)
    assert torch.equal(before, torch.get_rng_state())


def _switched(denoiser_a, denoiser_b, switch_step: int):
    return sample_switched_trajectory(
        denoiser_a, denoiser_b, switch_step, prompt_embeddings(3), SEEDS, STEPS, 3.0, LATENT_SHAPE
    )


def test_switched_matches_a_before_switch(base_denoiser, adapted_denoiser):
    switched = _switched(base_denoiser, adapted_denoiser, switch_step=2)
    only_a = _sample(base_denoiser)
    assert torch.equal(switched.latents[:, :, :2], only_a.latents[:, :, :2])
    assert torch.equal(switched.predicted_clean[:, :, :2], only_a.predicted_clean[:, :, :2])


def test_switched_differs_after_switch(base_denoiser, adapted_denoiser):
    switched = _switched(base_denoiser, adapted_denoiser, switch_step=2)
    assert not torch.equal(switched.latents[:, :, 2], _sample(base_denoiser).latents[:, :, 2])
    assert switched.switch_step == 2


def test_switch_at_zero_is_model_b(base_denoiser, adapted_denoiser):
    assert torch.equal(_switched(base_denoiser, adapted_denoiser, 0).latents, _sample(adapted_denoiser).latents)


def test_switch_at_end_is_model_a(base_denoiser, adapted_denoiser):
    assert torch.equal(_switched(base_denoiser, adapted_denoiser, STEPS).latents, _sample(base_denoiser).latents)


def test_switch_step_out_of_range(base_denoiser):
    with pytest.raises(ValueError, match="switch_step"):
        _switched(base_denoiser, base_denoiser, STEPS + 1)


def test_prompt_text_count_checked(base_denoiser):
    with pytest.raises(ValueError, match="prompt texts"):
        sample_trajectory(base_denoiser, prompt_embeddings(2), SEEDS, STEPS, 3.0, LATENT_SHAPE, prompts=["one"])


def test_v_target_closed_form():
    scheduler = training_scheduler()
    clean = torch.randn(3, *LATENT_SHAPE, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(3, *LATENT_SHAPE, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([0, 500, 999])
    noisy, target = noisy_sample_and_target(scheduler, clean, noise, timesteps)
    alpha = scheduler.alphas_cumprod[timesteps].sqrt().view(-1, 1, 1)
    sigma = (1 - scheduler.alphas_cumprod[timesteps]).sqrt().view(-1, 1, 1)
    assert torch.allclose(noisy, alpha * clean + sigma * noise, atol=1e-6)
    assert torch.allclose(target, alpha * noise - sigma * clean, atol=1e-6)


def test_perfect_v_recovers_clean():
    # Feeding DDIM the true v gives the true x0 as pred_original_sample.
    scheduler = sampling_scheduler(STEPS)
    clean = torch.randn(2, *LATENT_SHAPE, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(2, *LATENT_SHAPE, generator=torch.Generator().manual_seed(3))
    timestep = scheduler.timesteps[1]
    timesteps = timestep.repeat(2)
    noisy, v = noisy_sample_and_target(training_scheduler(), clean, noise, timesteps)
    output = scheduler.step(v, timestep, noisy, eta=0.0)
    assert torch.allclose(output.pred_original_sample, clean, atol=1e-4)
