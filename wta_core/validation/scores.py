"""Checks and splits of the leave-one-genre-out score matrix shared by tests 7 to 11.

Layout: `matrix[i, j]` is the WTA score of the adapter trained without genre i, for a
prompt of genre j, so rows are removed genres and columns are prompt genres, both in the
order of `genres`. The diagonal contains the matched pairs and the rest the unmatched pairs.
Per-seed scores have shape [R, G, G] with the same layout on the last two axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_score_matrix(matrix, genres: Sequence[str] | None = None, *, name: str = "score matrix") -> np.ndarray:
    """Return `matrix` as a finite float array of shape [G, G] with G >= 2, or raise ValueError."""
    array = np.asarray(matrix, dtype=float)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"{name} must be square [G removed genres, G prompt genres], got shape {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 genres, got {array.shape[0]}")
    if genres is not None and len(genres) != array.shape[0]:
        raise ValueError(f"{name} has {array.shape[0]} genres but {len(genres)} genre names were given")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite scores")
    return array


def check_seed_scores(seed_scores, n_genres: int) -> np.ndarray:
    """Return per-seed scores as a finite float array [R, G, G] matching `n_genres`, or raise ValueError."""
    array = np.asarray(seed_scores, dtype=float)
    if array.ndim != 3 or array.shape[1:] != (n_genres, n_genres):
        raise ValueError(
            f"per-seed scores must have shape [R seeds, {n_genres}, {n_genres}], got {array.shape}"
        )
    if array.shape[0] < 1:
        raise ValueError("per-seed scores hold no seed")
    if not np.all(np.isfinite(array)):
        raise ValueError("per-seed scores contain NaN or infinite values")
    return array


def matched_unmatched(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split scores of shape [..., G, G] into flat matched (diagonal) and unmatched (off-diagonal) values."""
    n_genres = scores.shape[-1]
    diagonal = np.eye(n_genres, dtype=bool)
    diagonal = np.broadcast_to(diagonal, scores.shape)
    return scores[diagonal], scores[~diagonal]
