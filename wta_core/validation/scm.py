"""Tests 1 and 2 on a synthetic diffusion model whose training data and causes are known exactly.

The model. Training points x_1..x_N in R^d fall into labelled clusters (the genres of
this toy world). Under the variance-exploding noising kernel x_sigma = x_0 + sigma * eps,
the denoiser that minimises the training loss over a finite set is the posterior mean

    D(x, sigma) = sum_j w_j x_j,   w_j = softmax_j(log pi_j - ||x - x_j||^2 / (2 sigma^2)),

where pi_j is point j's share of the training draws. "Retraining" without point j is
setting pi_j = 0, which is exact. A prompt selects a cluster c. The conditional model
gives the prompt's points weight counts_j and every other point `prompt_leak *
counts_j`, so other clusters reach a generation only weakly, at high noise.

Training noise. counts_j ~ Poisson(`training_draws`), one draw per point from the
training seed, stands for how often SGD visited point j. A leave-one-out model keeps the
full model's counts and zeroes count j, as the pipeline's leave-one-out adapters reuse
the full adapter's training seed. Controls redraw every count from another seed and
remove nothing. The noise floor is the `cfg.independence_quantile` quantile of the
control scores of all generations. So a non-parent is a false positive only if its
removal moves a generation more than a change of training seed does.
`loo_shares_seed=False` gives each leave-one-out model its own counts instead. Its
non-parent scores then contain seed noise of the same size as the controls, so a share
of about 1 - quantile of them exceeds the floor by construction.

Sampling. A generation is a cloud of `n_frames` frames, each started from its own
Gaussian noise at `sigma_max` and moved by the deterministic DDIM update of the
variance-exploding schedule, x' = D + (sigma' / sigma) (x - D), over a geometric grid
from `sigma_max` to `sigma_min` and a last step to sigma = 0. The state after step i is
the cloud after that update, stored as [S steps, d channels, T frames] as the pipeline's
latents are, so `wta_core.transport.step_distances` compares clouds of frames.

Parents. A training point is a parent of a generation when it has at least
`parent_mass` of the generation's posterior mass at the last noise level (the weights
w_j above at `sigma_min`, averaged over frames). At that level each frame has collapsed
onto one training point, so with 16 frames and 5% any point that one frame lands on is
a parent. This reads only the full model, never a WTA score or a retrained model.

What the definition leaves out. A point can shape where frames land without any frame
landing on it, and removing it then changes the generation although it is no parent.
Two cases: a point of another cluster that pulls a leaked frame into its cluster at
high noise, and a point of the prompt's own cluster that no frame lands on but that
moves the boundaries between its neighbours' basins. The defaults keep both rare:
`prompt_leak` is small, and 16 frames over 3 points per cluster land on every point of
the prompt's cluster. Measured with `run_scm` and 8 generations per seed: the defaults
gave recovery 1.0 and no false positives for seeds 0 to 8, and recovery 0.75 for
seed 9. For seeds 0 to 2, `prompt_leak=1e-2` gave recovery 0.62 to 0.75. With 6 points
per cluster, 8 frames and `parent_mass=0.1`, recovery fell to 0 to 0.38 and the
false-positive rate rose to 3 to 7%, because the cluster points no frame landed on
scored like parents. For seed 0, 12 of those 14 points moved at least one frame to
another endpoint when removed, and the other 2 changed only the path, which the
default step weights (heaviest at the noisiest step) still count. Such failures come
from the parent definition more than from WTA. So read test 1 as "WTA ranks the
points a generation is made of above the rest, in a world where that is the whole
causal story".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wta_core.config import ScoreConfig, ValidationConfig
from wta_core.transport import step_distances, step_weights, wta_score
from wta_core.validation.result import TestResult, make_result, not_run

# Separate random streams, so that changing one size never changes another stream's draws.
_STREAM_POINTS, _STREAM_COUNTS, _STREAM_CONTROLS, _STREAM_LOO, _STREAM_NOISE = range(5)


@dataclass(frozen=True)
class ScmSpec:
    """Sizes and constants of the synthetic model. `run_scm` with the defaults took about 0.3 s on one CPU core."""

    n_clusters: int = 4
    points_per_cluster: int = 3
    dim: int = 2  # channels of a frame
    cluster_radius: float = 2.0  # cluster centres sit on a circle of this radius
    cluster_spread: float = 0.3  # standard deviation of points around their centre
    n_generations: int = 8  # prompts cycle through the clusters
    n_frames: int = 16
    n_steps: int = 20
    sigma_max: float = 10.0  # five times the cluster radius, so the first state is mostly noise
    sigma_min: float = 0.01
    prompt_leak: float = 1e-3  # prior weight of another cluster's point relative to the prompt's
    training_draws: float = 50.0  # expected visits per point; relative count noise is 1/sqrt of it
    n_controls: int = 8
    parent_mass: float = 0.05  # share of final posterior mass that makes a point a parent
    loo_shares_seed: bool = True

    def __post_init__(self) -> None:
        problems = []
        for name in ("n_clusters", "points_per_cluster", "dim", "n_generations", "n_frames", "n_controls"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_steps < 2:
            problems.append(f"n_steps must be >= 2, got {self.n_steps}")
        if not 0 < self.sigma_min < self.sigma_max:
            problems.append(f"need 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}")
        if not 0 <= self.prompt_leak <= 1:
            problems.append(f"prompt_leak must lie in [0, 1], got {self.prompt_leak}")
        if self.training_draws <= 0:
            problems.append(f"training_draws must be > 0, got {self.training_draws}")
        if not 0 < self.parent_mass <= 1:
            problems.append(f"parent_mass must lie in (0, 1], got {self.parent_mass}")
        if problems:
            raise ValueError("invalid ScmSpec: " + "; ".join(problems))

    @property
    def n_points(self) -> int:
        return self.n_clusters * self.points_per_cluster


@dataclass(frozen=True)
class TrainingSet:
    """Training points [N, d] and their cluster labels [N]."""

    points: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class ScmRun:
    """WTA scores of one synthetic experiment.

    `scores[g, j]` is generation g's score for removing point j, `null_scores[g, k]`
    its score against control k, `parents[g]` the parent indices, `prompts[g]` its cluster.
    """

    scores: np.ndarray  # [G, N]
    null_scores: np.ndarray  # [G, n_controls]
    parents: list[np.ndarray]
    prompts: np.ndarray  # [G]
    training_set: TrainingSet


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def make_training_set(spec: ScmSpec, seed: int) -> TrainingSet:
    """Draw `points_per_cluster` Gaussian points around each of `n_clusters` centres on a circle."""
    angles = 2 * np.pi * np.arange(spec.n_clusters) / spec.n_clusters
    centres = np.zeros((spec.n_clusters, spec.dim))
    centres[:, 0] = spec.cluster_radius * np.cos(angles)
    if spec.dim > 1:
        centres[:, 1] = spec.cluster_radius * np.sin(angles)
    labels = np.repeat(np.arange(spec.n_clusters), spec.points_per_cluster)
    offsets = spec.cluster_spread * _rng(seed, _STREAM_POINTS).standard_normal((spec.n_points, spec.dim))
    return TrainingSet(points=centres[labels] + offsets, labels=labels)


def _draw_counts(spec: ScmSpec, seed: int, stream: int, index: int = 0) -> np.ndarray:
    """Return Poisson(`training_draws`) visit counts [N] for one training seed."""
    counts = _rng(seed, stream, index).poisson(spec.training_draws, spec.n_points).astype(float)
    # A point never visited would be removed by accident; one visit keeps it in the model.
    return np.maximum(counts, 1.0)


def full_counts(spec: ScmSpec, seed: int) -> np.ndarray:
    """Return the visit counts [N] of the full model, which the leave-one-out models share."""
    return _draw_counts(spec, seed, _STREAM_COUNTS)


def control_counts(spec: ScmSpec, seed: int, control: int) -> np.ndarray:
    """Return the visit counts [N] of control `control`: all data, another training seed."""
    return _draw_counts(spec, seed, _STREAM_CONTROLS, control)


def prompt_prior(counts: np.ndarray, labels: np.ndarray, prompt: int, leak: float) -> np.ndarray:
    """Return the conditional prior weights [N] of a prompt: counts, times `leak` outside its cluster."""
    return counts * np.where(labels == prompt, 1.0, leak)


def noise_levels(spec: ScmSpec) -> np.ndarray:
    """Return the S noise levels, geometric from `sigma_max` down to `sigma_min`."""
    return np.geomspace(spec.sigma_max, spec.sigma_min, spec.n_steps)


def denoise(x: np.ndarray, sigma: float, points: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the posterior mean [T, d] and posterior weights [T, N] of clean points given x [T, d].

    Points with prior 0 get weight exactly 0, which is what removing them from training does.
    """
    squared = ((x[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1)
    with np.errstate(divide="ignore"):
        logits = np.log(prior)[None, :] - squared / (2.0 * sigma**2)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ points, weights


def sample(
    initial: np.ndarray, sigmas: np.ndarray, points: np.ndarray, priors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the deterministic sampler from `initial` [T, d].

    `priors` is [N] for one model, or [S, N] to use row i at step i (a switched model).
    Returns the states after each step [S, T, d], the predictions D made at each step
    [S, T, d] and the posterior weights at the last step [T, N].
    """
    priors = np.broadcast_to(priors, (sigmas.size, points.shape[0]))
    x = initial
    states = np.empty((sigmas.size, *initial.shape))
    predictions = np.empty_like(states)
    for step, sigma in enumerate(sigmas):
        next_sigma = sigmas[step + 1] if step + 1 < sigmas.size else 0.0
        prediction, weights = denoise(x, sigma, points, priors[step])
        x = prediction + (next_sigma / sigma) * (x - prediction)
        states[step] = x
        predictions[step] = prediction
    return states, predictions, weights


def find_parents(final_weights: np.ndarray, parent_mass: float) -> np.ndarray:
    """Return the indices of points holding at least `parent_mass` of the frame-averaged final posterior."""
    return np.flatnonzero(final_weights.mean(axis=0) >= parent_mass)


def initial_noise(spec: ScmSpec, seed: int, generation: int) -> np.ndarray:
    """Return the starting cloud [T, d] of one generation, the same for every model."""
    return spec.sigma_max * _rng(seed, _STREAM_NOISE, generation).standard_normal((spec.n_frames, spec.dim))


def _as_latents(states: np.ndarray) -> np.ndarray:
    """Reorder states [S, T, d] to the pipeline's latent layout [S, channels, frames]."""
    return np.transpose(states, (0, 2, 1))


def _distance_options(score: ScoreConfig) -> dict:
    return {
        "method": score.method,
        "n_projections": score.sliced_projections,
        "reg": score.sinkhorn_reg,
        "seed": score.seed,
    }


def run_scm(spec: ScmSpec, seed: int, score: ScoreConfig = ScoreConfig()) -> ScmRun:
    """Score every (generation, training point) pair and every (generation, control) pair.

    `score` sets the W1 method, the step weights and the compared quantity: the states
    after each step ("latent") or the model's predictions D at each step ("predicted_clean").
    """
    training = make_training_set(spec, seed)
    sigmas = noise_levels(spec)
    weights = step_weights(spec.n_steps, score.weighting, score.decay)
    shared_counts = full_counts(spec, seed)
    controls = [control_counts(spec, seed, k) for k in range(spec.n_controls)]

    def score_against(full_latents, initial, prior) -> float:
        states, predictions, _ = sample(initial, sigmas, training.points, prior)
        compared = predictions if score.target == "predicted_clean" else states
        distances = step_distances(full_latents, _as_latents(compared), **_distance_options(score))
        return wta_score(distances, weights)

    scores = np.empty((spec.n_generations, spec.n_points))
    null_scores = np.empty((spec.n_generations, spec.n_controls))
    parents, prompts = [], np.arange(spec.n_generations) % spec.n_clusters
    for generation, prompt in enumerate(prompts):
        initial = initial_noise(spec, seed, generation)
        full_prior = prompt_prior(shared_counts, training.labels, prompt, spec.prompt_leak)
        states, predictions, final_weights = sample(initial, sigmas, training.points, full_prior)
        full_latents = _as_latents(predictions if score.target == "predicted_clean" else states)
        parents.append(find_parents(final_weights, spec.parent_mass))

        for removed in range(spec.n_points):
            counts = shared_counts if spec.loo_shares_seed else _draw_counts(spec, seed, _STREAM_LOO, removed)
            counts = counts.copy()
            counts[removed] = 0.0
            prior = prompt_prior(counts, training.labels, prompt, spec.prompt_leak)
            scores[generation, removed] = score_against(full_latents, initial, prior)
        for k, counts in enumerate(controls):
            prior = prompt_prior(counts, training.labels, prompt, spec.prompt_leak)
            null_scores[generation, k] = score_against(full_latents, initial, prior)

    return ScmRun(scores=scores, null_scores=null_scores, parents=parents, prompts=prompts, training_set=training)


def parent_recovery_test(run: ScmRun, cfg: ValidationConfig) -> TestResult:
    """Run test 1: the share of generations whose parents take the top |parents| scores.

    A generation counts only if every parent scores strictly above every non-parent, so
    a tie at the cut is a miss. Generations with no parent, or with no non-parent, say
    nothing about ranking and are left out, with their count in the details.
    """
    hits, margins, skipped = [], [], 0
    for generation, parent_indices in enumerate(run.parents):
        mask = np.zeros(run.scores.shape[1], dtype=bool)
        mask[parent_indices] = True
        if mask.all() or not mask.any():
            skipped += 1
            continue
        margin = run.scores[generation, mask].min() - run.scores[generation, ~mask].max()
        margins.append(float(margin))
        hits.append(bool(margin > 0))

    details = {
        "n_generations": len(run.parents),
        "n_scored": len(hits),
        "n_left_out": skipped,
        "parents": [indices.tolist() for indices in run.parents],
        "margins": margins,  # min parent score minus max non-parent score, per scored generation
    }
    if not hits:
        return not_run(1, cfg.scm_parent_recovery, "no generation has both parents and non-parents", **details)
    share = float(np.mean(hits))
    return make_result(1, share, cfg.scm_parent_recovery, share >= cfg.scm_parent_recovery, details)


def false_positive_test(run: ScmRun, cfg: ValidationConfig) -> TestResult:
    """Run test 2: the share of non-parent scores above the controls' noise floor."""
    noise_floor = float(np.quantile(run.null_scores, cfg.independence_quantile))
    mask = np.zeros(run.scores.shape, dtype=bool)
    for generation, parent_indices in enumerate(run.parents):
        mask[generation, parent_indices] = True
    non_parent_scores = run.scores[~mask]

    details = {
        "noise_floor": noise_floor,
        "quantile": cfg.independence_quantile,
        "n_null_scores": int(run.null_scores.size),
        "n_non_parents": int(non_parent_scores.size),
        "max_non_parent_score": float(non_parent_scores.max()) if non_parent_scores.size else None,
        "min_parent_score": float(run.scores[mask].min()) if mask.any() else None,
    }
    if non_parent_scores.size == 0:
        return not_run(2, cfg.scm_false_positive_rate, "every training point is a parent", **details)
    rate = float(np.mean(non_parent_scores > noise_floor))
    details["n_above_floor"] = int(np.sum(non_parent_scores > noise_floor))
    return make_result(2, rate, cfg.scm_false_positive_rate, rate <= cfg.scm_false_positive_rate, details)


def scm_tests(
    cfg: ValidationConfig, spec: ScmSpec = ScmSpec(), score: ScoreConfig = ScoreConfig()
) -> list[TestResult]:
    """Run tests 1 and 2 on one synthetic experiment seeded with `cfg.seed`."""
    run = run_scm(spec, cfg.seed, score)
    return [parent_recovery_test(run, cfg), false_positive_test(run, cfg)]


def switched_divergence_curves(
    spec: ScmSpec,
    seed: int,
    generation: int,
    removed: int,
    switch_steps,
    score: ScoreConfig = ScoreConfig(),
) -> dict[int, np.ndarray]:
    """Return {k: divergence [S]} between the full model's trajectory and one that switches at k.

    The switched trajectory uses the full model for steps 0..k-1 and the model without
    point `removed` from step k on, from the same starting noise. The curves compare the
    states after each step, whatever `score.target` is. This is test 3's input.
    """
    training = make_training_set(spec, seed)
    sigmas = noise_levels(spec)
    prompt = generation % spec.n_clusters
    counts = full_counts(spec, seed)
    loo_counts = counts.copy()
    loo_counts[removed] = 0.0
    full_prior = prompt_prior(counts, training.labels, prompt, spec.prompt_leak)
    loo_prior = prompt_prior(loo_counts, training.labels, prompt, spec.prompt_leak)
    initial = initial_noise(spec, seed, generation)
    full_states, _, _ = sample(initial, sigmas, training.points, full_prior)

    curves = {}
    for switch_step in switch_steps:
        priors = np.where((np.arange(spec.n_steps) < switch_step)[:, None], full_prior, loo_prior)
        states, _, _ = sample(initial, sigmas, training.points, priors)
        curves[int(switch_step)] = step_distances(
            _as_latents(full_states), _as_latents(states), **_distance_options(score)
        )
    return curves
