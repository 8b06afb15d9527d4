"""Figures attached to assets and reports, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".tmp.png")
    figure.savefig(temporary, dpi=90, bbox_inches="tight")
    plt.close(figure)
    temporary.replace(path)
    return path


def genre_spectrograms(examples: dict[str, np.ndarray], path: Path,
                       title: str = "normalised log-mel, first clip of each genre (mel bins by frames)") -> Path:
    """Draw one normalised log-mel image [n_mels, frames] per genre, side by side."""
    genres = sorted(examples)
    columns = min(5, len(genres))
    rows = int(np.ceil(len(genres) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.4 * rows), squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    for axis, genre in zip(axes.flat, genres):
        axis.set_axis_on()
        axis.imshow(examples[genre], origin="lower", aspect="auto", cmap="magma")
        axis.set_title(genre, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=9)
    return _save(figure, path)


def heatmap(matrix: np.ndarray, row_labels: list[str], column_labels: list[str], title: str, path: Path) -> Path:
    """Annotated heatmap of a small matrix."""
    figure, axis = plt.subplots(figsize=(1 + 0.7 * len(column_labels), 1 + 0.55 * len(row_labels)))
    shown = axis.imshow(matrix, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(column_labels)), column_labels, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axis.text(j, i, f"{matrix[i, j]:.3g}", ha="center", va="center", fontsize=6, color="white")
    figure.colorbar(shown, ax=axis)
    axis.set_title(title, fontsize=9)
    return _save(figure, path)


def curves(series: dict[str, np.ndarray], xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Line plot of named series over a shared x index."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for label, values in series.items():
        axis.plot(np.arange(len(values)), values, label=label, linewidth=1)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    if len(series) <= 12:
        axis.legend(fontsize=7)
    return _save(figure, path)
