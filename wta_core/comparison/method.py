"""The score matrix of one attribution method, in the layout every comparison metric reads.

Layout: `matrix[i, j]` is the score that the method gives training genre i for the
generation of prompt j. Rows follow `genres` and columns follow `prompt_genres`, the
genre that each prompt describes. That is the layout of the leave-one-genre-out WTA
score matrix (rows removed genre, columns prompt genre). A larger score always means
more attribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

METHOD_WTA = "wta"
METHOD_DESTINATION = "destination-only"
METHOD_TRACIN = "tracin-lora"
METHOD_EMBEDDING_PREFIX = "embedding-"  # followed by the embedding's name, "mfcc-chroma" or "clap"


@dataclass(frozen=True)
class MethodScores:
    """Scores of one attribution method for every (training genre, prompt) pair, and what they cost.

    `seconds` is the wall time of the attribution computation itself, given the stored
    adapters and trajectories. Training the adapters is not included, so
    `retrainings` counts the LoRA trainings that the method needs beyond the full adapter.
    """

    method: str
    matrix: np.ndarray  # float [G training genres, P prompts]
    genres: tuple[str, ...]  # row labels
    prompt_genres: tuple[str, ...]  # column labels: the genre each prompt describes
    seconds: float
    retrainings: int
    details: dict = field(default_factory=dict)  # JSON-serialisable notes, stored with every metric row

    def __post_init__(self) -> None:
        matrix = np.asarray(self.matrix, dtype=float)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "genres", tuple(self.genres))
        object.__setattr__(self, "prompt_genres", tuple(self.prompt_genres))
        expected = (len(self.genres), len(self.prompt_genres))
        if matrix.shape != expected:
            raise ValueError(
                f"{self.method} scores have shape {matrix.shape}, expected {expected} "
                f"[training genres, prompts] for genres {list(self.genres)} and prompts {list(self.prompt_genres)}"
            )
        if not np.all(np.isfinite(matrix)):
            raise ValueError(f"{self.method} scores contain NaN or infinite values; check the method's inputs")
        if len(set(self.genres)) != len(self.genres):
            raise ValueError(f"{self.method} genres contain duplicates: {list(self.genres)}")
        if self.retrainings < 0:
            raise ValueError(f"{self.method} retrainings must be >= 0, got {self.retrainings}")


def wta_retrainings(n_genres: int, n_controls: int) -> int:
    """Return the LoRA trainings WTA needs: one leave-one-out adapter per genre plus the control seeds."""
    return n_genres + n_controls


def wta_method_scores(
    scores: pl.DataFrame,
    genres: Sequence[str],
    seconds: float,
    n_controls: int,
    target: str = "latent",
) -> MethodScores:
    """Build WTA's `MethodScores` from rows of the `wta_scores` table.

    Reads the rows of kind "loo" for `target` and averages each (removed genre,
    prompt) pair over its sampling seeds. The prompts are `genres` in the same order.
    Rows of one method and weighting only are expected, so filter the table first.
    Raises ValueError naming the first pair that has no row.
    """
    genres = list(genres)
    rows = scores.filter((pl.col("kind") == "loo") & (pl.col("target") == target))
    means = rows.group_by(["removed_genre", "prompt"]).agg(pl.col("score").mean())
    lookup = {(row["removed_genre"], row["prompt"]): row["score"] for row in means.iter_rows(named=True)}

    matrix = np.empty((len(genres), len(genres)))
    for i, removed in enumerate(genres):
        for j, prompt in enumerate(genres):
            if (removed, prompt) not in lookup:
                raise ValueError(
                    f"wta_scores has no {target!r} row for removed genre {removed!r} and prompt {prompt!r}; "
                    f"score the leave-one-out adapter {removed!r} first"
                )
            matrix[i, j] = lookup[(removed, prompt)]
    return MethodScores(
        method=METHOD_WTA,
        matrix=matrix,
        genres=tuple(genres),
        prompt_genres=tuple(genres),
        seconds=seconds,
        retrainings=wta_retrainings(len(genres), n_controls),
        details={"target": target, "seeds_averaged": True},
    )
