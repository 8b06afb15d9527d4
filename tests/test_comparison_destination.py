"""Destination-only retraining scores on constructed stored trajectories."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from wta_core.comparison.destination import destination_attribution, final_state_distances
from wta_core.errors import ArtifactError
from wta_core.pipeline.generation import StoredTrajectory

GENRES = ["blues", "jazz"]
SHAPE = (2, 2, 3, 4, 5)  # [prompts, seeds, steps, channels, frames]


def _trajectory(adapter_id: str, latents: torch.Tensor) -> StoredTrajectory:
    return StoredTrajectory(
        adapter_id=adapter_id,
        latents=latents,
        predicted_clean=latents.clone(),
        initial_noise=torch.zeros(SHAPE[1], *SHAPE[3:]),
        timesteps=torch.tensor([999, 500, 0]),
        genres=GENRES,
        prompts=["a blues song", "a jazz song"],
        seeds=[0, 1],
        path=Path("unused.safetensors"),
    )


def _latents(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def test_identical_trajectories_zero():
    full = _trajectory("full", _latents())
    distances = final_state_distances(full, _trajectory("blues", _latents()))
    assert distances.shape == (2, 2)
    assert np.all(distances == 0.0)


def test_final_shift_is_distance():
    # Every frame moves by the same vector of norm 1.5, so W1 is exactly 1.5.
    full_latents = _latents()
    shifted = full_latents.clone()
    shift = torch.tensor([0.9, 1.2, 0.0, 0.0])
    shifted[1, 0, -1] += shift[:, None]
    distances = final_state_distances(_trajectory("full", full_latents), _trajectory("jazz", shifted))
    assert distances[1, 0] == pytest.approx(1.5)
    assert distances[0].sum() == 0.0
    assert distances[1, 1] == 0.0


def test_earlier_steps_ignored():
    full_latents = _latents()
    changed = full_latents.clone()
    changed[:, :, :-1] += 10.0
    distances = final_state_distances(_trajectory("full", full_latents), _trajectory("blues", changed))
    assert np.all(distances == 0.0)


def test_attribution_averages_seeds():
    full_latents = _latents()
    moved = full_latents.clone()
    moved[0, 1, -1] += torch.tensor([2.0, 0.0, 0.0, 0.0])[:, None]
    full = _trajectory("full", full_latents)
    scores = destination_attribution(full, {"blues": _trajectory("blues", moved),
                                            "jazz": _trajectory("jazz", full_latents)}, GENRES)
    assert scores.matrix.shape == (2, 2)
    assert scores.matrix[0, 0] == pytest.approx(1.0)
    assert scores.matrix[1].sum() == 0.0
    assert scores.retrainings == 2
    assert scores.prompt_genres == ("blues", "jazz")


def test_incomparable_raises():
    full = _trajectory("full", _latents())
    other = dataclasses.replace(_trajectory("blues", _latents()), seeds=[0, 2])
    with pytest.raises(ArtifactError, match="seeds differ"):
        final_state_distances(full, other)


def test_missing_genre_raises():
    full = _trajectory("full", _latents())
    with pytest.raises(ValueError, match="jazz"):
        destination_attribution(full, {"blues": full}, GENRES)
