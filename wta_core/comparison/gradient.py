r"""Gradient attribution over the LoRA parameters: a TracIn-style gradient dot product ("tracin-lora").

For a generation z' (its final latent x0 and its prompt) and a training clip z, the
score is

.. math::
    s(z, z') = \nabla_\theta L(z) \cdot \nabla_\theta L(z'), \qquad
    L(z) = \frac{1}{K} \sum_{k=1}^{K} \mathrm{MSE}\big(v_\theta(x_{t_k}, t_k, c), v_{t_k}\big)

where theta are the LoRA weights of the full adapter only, and L is the training
objective of `wta_core.training` (v-prediction MSE) at K fixed timesteps t_k. The noise
draw of each timestep comes from one seeded generator and is shared by the generation
and every clip, so their gradients differ only through the latent and the prompt. A
positive score means that, to first order, a plain gradient step on the clip lowers
the loss of the generation.

This is TracIn with a single checkpoint (the final adapter) and without the learning
rate factor, which is constant and does not change rankings. Training drops the prompt
for 10% of examples, but here every loss is conditioned on its prompt, because the
generation was sampled with it.

A genre's score for a prompt is the sum of its clips' scores, a first-order estimate
of how much the genre's clips lower the generation's loss. With `normalise="mean"` it is the mean instead,
which stops genres with more clips from scoring higher for that reason alone. The
scores of a prompt are averaged over its sampling seeds.

Per-clip gradients come from `torch.func`: `functional_call` with the LoRA weights as
the only free inputs, `grad` of the per-example loss, and `vmap` over a chunk of clips.
Each chunk's gradients are reduced to dot products at once, so memory grows with
`chunk_size`, not with the number of clips.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from wta_core.comparison.method import METHOD_TRACIN, MethodScores
from wta_core.diffusion import noisy_sample_and_target, training_scheduler
from wta_core.model import NUM_TRAIN_TIMESTEPS, Denoiser

logger = logging.getLogger(__name__)

DEFAULT_TIMESTEPS = (125, 375, 625, 875)  # midpoints of four equal bands of the 1000 training timesteps
NORMALISATIONS = ("sum", "mean")


def lora_parameter_names(denoiser: Denoiser) -> list[str]:
    """Return the names of the LoRA A and B weights in `denoiser`, sorted, or raise if it has none.

    They are found by name, not by `requires_grad`, because `load_adapter` loads an
    adapter with its weights frozen.
    """
    names = sorted(name for name, _ in denoiser.named_parameters() if ".lora_A." in name or ".lora_B." in name)
    if not names:
        raise ValueError("the denoiser has no LoRA weights; pass a base model with its adapter loaded")
    return names


def timestep_noise(timesteps: Sequence[int], latent_shape: tuple[int, int], seed: int) -> torch.Tensor:
    """Draw one noise tensor per timestep, [K, C, T], from a CPU generator seeded with `seed`."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(len(timesteps), *latent_shape, generator=generator, dtype=torch.float32)


def loss_gradients(
    denoiser: Denoiser,
    clean: torch.Tensor,
    conditions: torch.Tensor,
    timesteps: Sequence[int],
    noise: torch.Tensor,
    chunk_size: int = 16,
) -> torch.Tensor:
    """Return the per-example gradients [B, n] of the training loss with respect to the LoRA weights.

    `clean` [B, C, T] are clean latents and `conditions` [B, D] their prompt embeddings.
    Example b's loss is the v-prediction MSE averaged over the K `timesteps`, with
    `noise` [K, C, T] as the noise of each timestep. The n gradient entries follow the
    sorted LoRA weight names, each flattened.
    """
    names = lora_parameter_names(denoiser)
    return torch.cat(list(_gradient_chunks(denoiser, names, clean, conditions, timesteps, noise, chunk_size)))


def tracin_clip_scores(
    denoiser: Denoiser,
    generated: torch.Tensor,
    prompt_embeddings: torch.Tensor,
    clips: torch.Tensor,
    clip_embeddings: torch.Tensor,
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    seed: int = 0,
    chunk_size: int = 16,
) -> np.ndarray:
    """Return the gradient dot products [N clips, P prompts], averaged over each prompt's seeds.

    `denoiser` holds the full adapter. `generated` [P, S, C, T] are its final latents and
    `prompt_embeddings` [P, D] their prompts. `clips` [N, C, T] and `clip_embeddings`
    [N, D] are the training clips with the per-clip prompt embeddings they were trained
    with.
    """
    generated = torch.as_tensor(generated, dtype=torch.float32)
    clips = torch.as_tensor(clips, dtype=torch.float32)
    _check_inputs(generated, prompt_embeddings, clips, clip_embeddings, timesteps, chunk_size)
    names = lora_parameter_names(denoiser)
    noise = timestep_noise(timesteps, tuple(clips.shape[1:]), seed)

    n_prompts, n_seeds = generated.shape[:2]
    test_clean = generated.reshape(n_prompts * n_seeds, *generated.shape[2:])
    test_conditions = prompt_embeddings.to(torch.float32).repeat_interleave(n_seeds, dim=0)
    test_gradients = torch.cat(list(
        _gradient_chunks(denoiser, names, test_clean, test_conditions, timesteps, noise, chunk_size)
    ))
    # The dot product is linear in the test gradient, so averaging the gradients over
    # seeds equals averaging the per-seed scores.
    test_gradients = test_gradients.reshape(n_prompts, n_seeds, -1).mean(dim=1)

    scores = []
    chunks = _gradient_chunks(denoiser, names, clips, clip_embeddings.to(torch.float32), timesteps, noise, chunk_size)
    for chunk in chunks:
        scores.append((chunk.to(torch.float64) @ test_gradients.to(torch.float64).T).cpu())
    return torch.cat(scores).numpy()


def tracin_attribution(
    denoiser: Denoiser,
    generated: torch.Tensor,
    prompt_embeddings: torch.Tensor,
    clips: torch.Tensor,
    clip_embeddings: torch.Tensor,
    clip_genres: Sequence[str],
    genres: Sequence[str],
    prompt_genres: Sequence[str],
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    seed: int = 0,
    chunk_size: int = 16,
    normalise: str = "sum",
) -> MethodScores:
    """Score each genre for each prompt by the summed (or mean) TracIn-LoRA scores of its clips.

    Arguments as in `tracin_clip_scores`, plus the genre of each clip and the genre
    order of the rows. Returns scores [G, P] with 0 retrainings.
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    labels = np.asarray(clip_genres)
    if labels.shape != (clips.shape[0],):
        raise ValueError(f"got {labels.size} clip genres for {clips.shape[0]} clips")

    start = time.perf_counter()
    clip_scores = tracin_clip_scores(
        denoiser, generated, prompt_embeddings, clips, clip_embeddings, timesteps, seed, chunk_size
    )
    matrix = np.empty((len(genres), clip_scores.shape[1]))
    for index, genre in enumerate(genres):
        members = clip_scores[labels == genre]
        if members.shape[0] == 0:
            raise ValueError(f"genre {genre!r} has no training clip; every scored genre needs at least one")
        matrix[index] = members.sum(axis=0) if normalise == "sum" else members.mean(axis=0)
    seconds = time.perf_counter() - start
    logger.info("tracin-lora: %d clips, %d prompts, %d timesteps in %.1f s",
                clips.shape[0], matrix.shape[1], len(timesteps), seconds)
    return MethodScores(
        method=METHOD_TRACIN,
        matrix=matrix,
        genres=tuple(genres),
        prompt_genres=tuple(prompt_genres),
        seconds=seconds,
        retrainings=0,
        details={"timesteps": [int(t) for t in timesteps], "seed": int(seed), "normalise": normalise,
                 "lora_parameters": sum(dict(denoiser.named_parameters())[name].numel()
                                        for name in lora_parameter_names(denoiser))},
    )


def _gradient_chunks(denoiser, names, clean, conditions, timesteps, noise, chunk_size):
    """Yield per-example LoRA gradients [chunk, n] for consecutive chunks of `clean` [B, C, T]."""
    device = denoiser.device
    parameters = dict(denoiser.named_parameters())
    free = {name: parameters[name].detach() for name in names}
    fixed = {name: value.detach() for name, value in parameters.items() if name not in free}
    fixed.update({name: value for name, value in denoiser.named_buffers()})
    scheduler = training_scheduler()
    steps = torch.as_tensor(list(timesteps), dtype=torch.int64)
    n_steps = steps.numel()
    step_batch = steps.to(device)

    def example_loss(lora, noisy, target, condition):
        # One example: its K noised copies form a batch of K, one per timestep.
        prediction = functional_call(
            denoiser, {**fixed, **lora}, (noisy, step_batch, condition.unsqueeze(0).expand(n_steps, -1))
        )
        return torch.nn.functional.mse_loss(prediction, target)

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0, 0))
    for start in range(0, clean.shape[0], chunk_size):
        chunk = clean[start:start + chunk_size]
        size = chunk.shape[0]
        # The noised inputs and targets do not depend on the weights, so they are built
        # outside the differentiated function: row (b, k) is example b at timestep k.
        noisy, target = noisy_sample_and_target(
            scheduler,
            chunk.repeat_interleave(n_steps, dim=0),
            noise.repeat(size, 1, 1),
            steps.repeat(size),
        )
        shape = (size, n_steps, *chunk.shape[1:])
        # The math kernel of scaled_dot_product_attention has vmap batching rules. The
        # fused CPU kernel has none, so vmap would fall back to a slow loop per example.
        with sdpa_kernel(SDPBackend.MATH):
            gradients = per_example(
                free,
                noisy.reshape(shape).to(device),
                target.reshape(shape).to(device),
                conditions[start:start + size].to(device),
            )
        yield torch.cat([gradients[name].reshape(size, -1) for name in names], dim=1)


def _check_inputs(generated, prompt_embeddings, clips, clip_embeddings, timesteps, chunk_size) -> None:
    if generated.ndim != 4:
        raise ValueError(f"generated must be [prompts, seeds, C, T], got shape {list(generated.shape)}")
    if clips.ndim != 3 or clips.shape[1:] != generated.shape[2:]:
        raise ValueError(
            f"clips must be [N, {generated.shape[2]}, {generated.shape[3]}] like the generations, "
            f"got shape {list(clips.shape)}"
        )
    if prompt_embeddings.ndim != 2 or prompt_embeddings.shape[0] != generated.shape[0]:
        raise ValueError(
            f"prompt_embeddings must be [{generated.shape[0]}, D], one per prompt, got {list(prompt_embeddings.shape)}"
        )
    if clip_embeddings.shape != (clips.shape[0], prompt_embeddings.shape[1]):
        raise ValueError(
            f"clip_embeddings must be [{clips.shape[0]}, {prompt_embeddings.shape[1]}], one per clip, "
            f"got {list(clip_embeddings.shape)}"
        )
    if len(timesteps) == 0 or not all(0 <= int(t) < NUM_TRAIN_TIMESTEPS for t in timesteps):
        raise ValueError(f"timesteps must be a non-empty list in [0, {NUM_TRAIN_TIMESTEPS}), got {list(timesteps)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
