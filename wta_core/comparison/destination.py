"""Destination-only retraining: the leave-one-out effect measured on the final generated state alone.

It uses the same leave-one-genre-out adapters and trajectories as WTA but keeps only
the last step. The score of removed genre g for prompt p is the Wasserstein-1 distance
between the final latent of g's adapter and that of the full adapter, for the same
prompt and seed, averaged over seeds. The latents are compared as WTA compares each
step (`wta_core.transport.step_distances`): frames are points in mel-channel space.
Comparing it with WTA shows what the steps before the end point add.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np

from wta_core.comparison.method import METHOD_DESTINATION, MethodScores
from wta_core.pipeline.generation import StoredTrajectory, check_comparable
from wta_core.transport import wasserstein_1

logger = logging.getLogger(__name__)


def final_state_distances(
    reference: StoredTrajectory, other: StoredTrajectory, method: str = "exact", **options
) -> np.ndarray:
    """Return the W1 distances [P, S] between the final latents of `other` and `reference`.

    Both trajectories must come from the same prompts, seeds, steps and initial noise
    (`check_comparable` raises `ArtifactError` otherwise). `method` and `options` are
    passed to `wasserstein_1`.
    """
    check_comparable(reference, other)
    final_reference = reference.latents[:, :, -1].numpy()
    final_other = other.latents[:, :, -1].numpy()
    n_prompts, n_seeds = final_reference.shape[:2]
    distances = np.empty((n_prompts, n_seeds))
    for p in range(n_prompts):
        for s in range(n_seeds):
            # [C, T] latents are read as T frames in R^C, as in step_distances.
            distances[p, s] = wasserstein_1(final_other[p, s].T, final_reference[p, s].T, method=method, **options)
    return distances


def destination_attribution(
    full: StoredTrajectory,
    removed: Mapping[str, StoredTrajectory],
    genres: Sequence[str],
    method: str = "exact",
    **options,
) -> MethodScores:
    """Score each removed genre for each prompt by the final-state distance to the full adapter.

    `removed` maps each genre of `genres` to the trajectories of the adapter trained
    without it. The prompts are those of `full` (`full.genres`). Returns scores [G, P]
    averaged over seeds, with one retraining per genre.
    """
    missing = [genre for genre in genres if genre not in removed]
    if missing:
        raise ValueError(
            f"no leave-one-out trajectories for genres {missing}; generate trajectories for those adapters first"
        )
    start = time.perf_counter()
    matrix = np.stack([
        final_state_distances(full, removed[genre], method, **options).mean(axis=1) for genre in genres
    ])
    seconds = time.perf_counter() - start
    logger.info("destination-only: %d adapters, %d prompts in %.1f s", len(genres), matrix.shape[1], seconds)
    return MethodScores(
        method=METHOD_DESTINATION,
        matrix=matrix,
        genres=tuple(genres),
        prompt_genres=tuple(full.genres),
        seconds=seconds,
        retrainings=len(genres),
        details={"distance": f"wasserstein-1 ({method}) of the final latent", "seeds": len(full.seeds)},
    )
