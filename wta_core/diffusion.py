"""Noise schedule, training targets and the deterministic DDIM sampler that records trajectories.

Objective: v-prediction, which is also the default of diffusers'
CosineDPMSolverMultistepScheduler, the scheduler of Stable Audio Open. The model
predicts v = sqrt(a_t) * noise - sqrt(1 - a_t) * x0, where a_t is the cumulative
product of alphas. For unit-variance data the target has unit variance at every
noise level. The clean-sample estimate x0 = sqrt(a_t) * x_t - sqrt(1 - a_t) * v
stays bounded at the noisiest steps. With epsilon-prediction that estimate divides
by sqrt(a_t), which is near 0 at the first sampling steps. That matters here,
because the predicted clean samples are compared step by step.

Schedule: 1000 training timesteps with the cosine beta schedule ("squaredcos_cap_v2"),
no sample clipping (standardised log-mels exceed [-1, 1]). Sampling uses DDIM with
eta = 0 and "trailing" timestep spacing, so the first step starts at t = 999 from pure
noise. No noise is drawn after the initial latent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from wta_core.model import NUM_TRAIN_TIMESTEPS, Denoiser
from wta_core.text import unconditional_embedding

PREDICTION_TYPE = "v_prediction"
BETA_SCHEDULE = "squaredcos_cap_v2"


def _schedule_kwargs() -> dict:
    return {
        "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
        "beta_schedule": BETA_SCHEDULE,
        "prediction_type": PREDICTION_TYPE,
        "clip_sample": False,
    }


def training_scheduler():
    """Return the `DDPMScheduler` that noises training examples (`add_noise`, `get_velocity`)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**_schedule_kwargs())


def sampling_scheduler(steps: int):
    """Return a `DDIMScheduler` on the training schedule with `steps` timesteps set."""
    from diffusers import DDIMScheduler

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    scheduler = DDIMScheduler(**_schedule_kwargs(), timestep_spacing="trailing", set_alpha_to_one=True)
    scheduler.set_timesteps(steps)
    return scheduler


def noisy_sample_and_target(
    scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the noised latents x_t and the v-prediction target for `clean` [B, C, T] at `timesteps` [B]."""
    timesteps = timesteps.to(clean.device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    target = scheduler.get_velocity(clean, noise, timesteps)
    return noisy, target


def initial_noise(seeds: Sequence[int], latent_shape: tuple[int, int]) -> torch.Tensor:
    """Draw the starting latents [len(seeds), C, T], one CPU generator per seed.

    The noise of a seed depends only on the seed and the latent shape, never on the
    model, the device or the other seeds and prompts that are sampled with it.
    """
    channels, frames = latent_shape
    rows = [
        torch.randn(channels, frames, generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)
        for seed in seeds
    ]
    return torch.stack(rows) if rows else torch.zeros(0, channels, frames)


def guided_prediction(
    denoiser: Denoiser,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    prompt_embeddings: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """Return the classifier-free guided model output for latents [B, C, T] at one timestep.

    With `guidance_scale` 1.0 the model runs once on the prompts. Otherwise it runs on
    the unconditional (zero) and prompt embeddings in one batch and returns
    uncond + guidance_scale * (cond - uncond).
    """
    batch = latents.shape[0]
    timesteps = timestep.reshape(1).expand(batch)
    if guidance_scale == 1.0:
        return denoiser(latents, timesteps, prompt_embeddings)

    unconditional = unconditional_embedding(batch, prompt_embeddings.shape[1]).to(prompt_embeddings.device)
    both = denoiser(
        torch.cat([latents, latents]),
        torch.cat([timesteps, timesteps]),
        torch.cat([unconditional, prompt_embeddings]),
    )
    prediction_unconditional, prediction_conditional = both.chunk(2)
    return prediction_unconditional + guidance_scale * (prediction_conditional - prediction_unconditional)


@dataclass
class Trajectory:
    """Latent states of one sampling run over every prompt and seed, on the CPU in float32.

    Row p of `prompts`, `seeds` index s and step k give `latents[p, s, k]`, the latent
    after step k, and `predicted_clean[p, s, k]`, the scheduler's estimate of the clean
    sample at step k (`pred_original_sample`).
    """

    latents: torch.Tensor  # [P, S, steps, C, T]
    predicted_clean: torch.Tensor  # [P, S, steps, C, T]
    initial_noise: torch.Tensor  # [S, C, T], the latent before step 0
    timesteps: torch.Tensor  # [steps], int64 scheduler timesteps, from noisiest
    prompts: list[str]
    seeds: list[int]
    guidance_scale: float
    switch_step: int | None = None  # first step run by the second model, if any

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])


def _sample(
    denoiser_for_step: Callable[[int], Denoiser],
    prompt_embeddings: torch.Tensor,
    seeds: Sequence[int],
    steps: int,
    guidance_scale: float,
    latent_shape: tuple[int, int],
    prompts: Sequence[str] | None,
) -> Trajectory:
    if prompt_embeddings.ndim != 2:
        raise ValueError(f"prompt_embeddings must be [P, D], got shape {list(prompt_embeddings.shape)}")
    if len(seeds) == 0:
        raise ValueError("seeds must name at least one seed")
    num_prompts = prompt_embeddings.shape[0]
    prompts = list(prompts) if prompts is not None else [f"prompt {index}" for index in range(num_prompts)]
    if len(prompts) != num_prompts:
        raise ValueError(f"got {len(prompts)} prompt texts for {num_prompts} prompt embeddings")

    scheduler = sampling_scheduler(steps)
    noise = initial_noise(seeds, latent_shape)
    num_seeds = len(seeds)
    channels, frames = latent_shape

    # Batch row b is prompt b // num_seeds with seed b % num_seeds.
    latents = noise.repeat(num_prompts, 1, 1) * scheduler.init_noise_sigma
    conditions = prompt_embeddings.to(torch.float32).repeat_interleave(num_seeds, dim=0)

    recorded_latents = torch.empty(num_prompts * num_seeds, steps, channels, frames)
    recorded_clean = torch.empty_like(recorded_latents)
    with torch.no_grad():
        for index, timestep in enumerate(scheduler.timesteps):
            denoiser = denoiser_for_step(index)
            device = denoiser.device
            prediction = guided_prediction(
                denoiser, latents.to(device), timestep.to(device), conditions.to(device), guidance_scale
            )
            output = scheduler.step(prediction.cpu(), timestep, latents, eta=0.0)
            latents = output.prev_sample
            recorded_latents[:, index] = latents
            recorded_clean[:, index] = output.pred_original_sample

    shape = (num_prompts, num_seeds, steps, channels, frames)
    return Trajectory(
        latents=recorded_latents.reshape(shape),
        predicted_clean=recorded_clean.reshape(shape),
        initial_noise=noise,
        timesteps=scheduler.timesteps.to(torch.int64).clone(),
        prompts=prompts,
        seeds=[int(seed) for seed in seeds],
        guidance_scale=float(guidance_scale),
    )


def sample_trajectory(
    denoiser: Denoiser,
    prompt_embeddings: torch.Tensor,
    seeds: Sequence[int],
    steps: int,
    guidance_scale: float,
    latent_shape: tuple[int, int],
    prompts: Sequence[str] | None = None,
) -> Trajectory:
    """Sample every prompt x seed pair in one batch with deterministic DDIM and record each step.

    `prompt_embeddings` is [P, D]. The starting latent of each seed comes from
    `initial_noise`, so it is the same for every adapter and batch composition.

    NOTE: only the starting noise is independent of the batch. CPU kernels may round
    the model output differently for another batch size, so compare trajectories
    that were sampled with the same prompts and seeds.
    """
    return _sample(lambda index: denoiser, prompt_embeddings, seeds, steps, guidance_scale, latent_shape, prompts)


def sample_switched_trajectory(
    denoiser_a: Denoiser,
    denoiser_b: Denoiser,
    switch_step: int,
    prompt_embeddings: torch.Tensor,
    seeds: Sequence[int],
    steps: int,
    guidance_scale: float,
    latent_shape: tuple[int, int],
    prompts: Sequence[str] | None = None,
) -> Trajectory:
    """Sample like `sample_trajectory`, with `denoiser_a` for steps < switch_step and `denoiser_b` after.

    `switch_step` 0 runs `denoiser_b` throughout and `steps` runs `denoiser_a` throughout.
    Steps before the switch match `sample_trajectory(denoiser_a, ...)` exactly.
    """
    if not 0 <= switch_step <= steps:
        raise ValueError(f"switch_step must lie in [0, {steps}], got {switch_step}")
    trajectory = _sample(
        lambda index: denoiser_a if index < switch_step else denoiser_b,
        prompt_embeddings,
        seeds,
        steps,
        guidance_scale,
        latent_shape,
        prompts,
    )
    trajectory.switch_step = switch_step
    return trajectory
