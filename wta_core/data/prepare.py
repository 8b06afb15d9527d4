"""Build the dataset that every later stage reads: tracks, features and prompts.

`prepare_dataset` is idempotent for a given source and config: it rebuilds the catalog
(rendered audio is cached) and replaces the stored features and the `tracks` table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from wta_core.config import RunConfig
from wta_core.data import embedded
from wta_core.data.catalog import TRACK_COLUMNS, Catalog, build_catalog
from wta_core.data.gtzan import list_genres, scan_gtzan
from wta_core.data.huggingface import is_huggingface_copy, scan_huggingface
from wta_core.data.sources import SourceFile
from wta_core.errors import DatasetError
from wta_core.paths import WtaPaths
from wta_core.storage import TableStore

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
TRACK_SCHEMA = {
    "track_id": pl.String, "genre": pl.String, "source_path": pl.String, "sha256": pl.String,
    "sample_rate": pl.Int64, "channels": pl.Int64, "duration_s": pl.Float64,
    "clip_offset_s": pl.Float64, "status": pl.String, "reason": pl.String, "origin": pl.String,
    "feature_index": pl.Int64,
}


@dataclass(frozen=True)
class DatasetSummary:
    """Result of `prepare_dataset`, for logs and metadata."""

    source: str
    catalog: Catalog
    pretrain_count: int
    features_path: Path
    pretrain_path: Path


def check_dataset_path(dataset: str) -> Path | None:
    """Return the folder of a real dataset, None for the embedded one, or raise `DatasetError`."""
    if dataset in ("", EMBEDDED):
        return None
    root = Path(dataset).expanduser()
    if not root.exists():
        raise DatasetError(
            f"WTA_DATASET path {root} does not exist; point it at a GTZAN folder "
            "(<root>/<genre>/<genre>.000NN.wav) or a saved Hugging Face copy, or set it to 'embedded'"
        )
    if not root.is_dir():
        raise DatasetError(
            f"WTA_DATASET path {root} is a file; point it at the folder that holds the genre "
            "folders (or the parquet/arrow files), or set it to 'embedded'"
        )
    if not any(root.iterdir()):
        raise DatasetError(
            f"WTA_DATASET folder {root} is empty; copy GTZAN into it (<root>/<genre>/<genre>.000NN.wav) "
            "or set WTA_DATASET to 'embedded'"
        )
    return root


def dataset_genres(dataset: str, config: RunConfig) -> list[str]:
    """Return the genre names the dataset will have, in sorted order, without decoding audio.

    The definitions call this when they load to build the genre partitions. So it must be fast,
    and it returns [] instead of raising, because the dataset asset reports the problem in full.
    """
    try:
        root = check_dataset_path(dataset)
        if root is None:
            styles = embedded.STYLES[: config.data.max_genres] if config.data.max_genres else embedded.STYLES
            genres = sorted(style.genre for style in styles)
        elif is_huggingface_copy(root):
            genres = sorted({source.genre for source in scan_huggingface(root)})
        else:
            genres = list_genres(root)
    except (DatasetError, OSError) as error:
        log.warning("could not list genres of %r: %s", dataset, error)
        return []
    if config.data.max_genres is not None:
        genres = genres[: config.data.max_genres]
    return genres


def genre_prompts(genres: list[str], dataset: str) -> dict[str, str]:
    """Text prompt per genre: the embedded style's description, else "a <genre> song"."""
    styles = embedded.style_prompts()
    if dataset in ("", EMBEDDED):
        return {genre: styles[genre] for genre in genres}
    return {genre: f"a {genre.replace('_', ' ')} song" for genre in genres}


def _sources(dataset: str, config: RunConfig, paths: WtaPaths) -> tuple[list[SourceFile], list[SourceFile], list[dict]]:
    root = check_dataset_path(dataset)
    need_pretrain = config.model.kind == "embedded"
    if root is None:
        return embedded.embedded_sources(paths.render_cache, config.data.clips_per_genre,
                                         config.data.pretrain_clips, config.data.max_genres)
    sources = scan_huggingface(root) if is_huggingface_copy(root) else scan_gtzan(root)
    pretrain: list[SourceFile] = []
    split: list[dict] = []
    if need_pretrain:
        # The embedded base model is pretrained on the embedded corpus's pretraining portion,
        # which shares no recording with any user dataset.
        _, pretrain, split = embedded.embedded_sources(paths.render_cache, 0, config.data.pretrain_clips, 0)
    return sources, pretrain, split


def _save_features(catalog: Catalog, path: Path, prompts: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"track_ids": json.dumps([row["track_id"] for row in catalog.ok_rows])}
    if prompts is not None:
        metadata["prompts"] = json.dumps(prompts)
    temporary = path.with_suffix(".tmp")
    save_file({"features": torch.from_numpy(np.ascontiguousarray(catalog.feature_array()))}, str(temporary), metadata=metadata)
    temporary.replace(path)


def prepare_dataset(dataset: str, config: RunConfig, paths: WtaPaths) -> DatasetSummary:
    """Build tracks and features from `dataset` (a path or 'embedded') and store them under `paths`."""
    attribution_sources, pretrain_sources, split = _sources(dataset, config, paths)
    if not attribution_sources:
        raise DatasetError(f"dataset {dataset!r} has no files; expected genre folders with audio files")
    catalog = build_catalog(attribution_sources, config.audio, config.data)

    pretrain_data = type(config.data)(clips_per_genre=10**9, min_track_seconds=config.data.min_track_seconds)
    pretrain_catalog = build_catalog(pretrain_sources, config.audio, pretrain_data, require_all_genres=False)
    # The catalog sorts by genre (here the prompt); restore the planned order, which cycles
    # through the instruments, before keeping the first `pretrain_clips`.
    pairs = sorted(zip(pretrain_catalog.ok_rows, pretrain_catalog.features),
                   key=lambda pair: int(pair[0]["track_id"].rsplit(".", 1)[1]))
    pairs = pairs[: config.data.pretrain_clips]
    pretrain_ok = [row for row, _ in pairs]
    if config.model.kind == "embedded" and not pretrain_ok:
        raise DatasetError("no pretraining clip could be rendered from the music21 corpus; see the log")

    paths.dataset_dir.mkdir(parents=True, exist_ok=True)
    features_path = paths.dataset_dir / "features.safetensors"
    pretrain_path = paths.dataset_dir / "pretrain.safetensors"
    _save_features(catalog, features_path)
    if pretrain_ok:
        trimmed = Catalog(rows=pretrain_ok, features=[features for _, features in pairs])
        _save_features(trimmed, pretrain_path, prompts=[row["genre"] for row in pretrain_ok])
    if split:
        embedded.write_split(split, paths.dataset_dir / "corpus_split.json")

    store = TableStore(paths.database)
    store.replace_rows("tracks", pl.DataFrame(catalog.rows, schema=TRACK_SCHEMA))
    if split:
        store.replace_rows("corpus_split", pl.DataFrame(split))
    log.info("dataset ready: %d ok clips in %d genres, %d skipped, %d pretraining clips",
             len(catalog.ok_rows), len(catalog.clips_per_genre()), len(catalog.skipped_rows), len(pretrain_ok))
    return DatasetSummary(source=dataset or EMBEDDED, catalog=catalog, pretrain_count=len(pretrain_ok),
                          features_path=features_path, pretrain_path=pretrain_path)


@dataclass(frozen=True)
class ClipSet:
    """Features of the dataset's `ok` clips with their track ids and genres, in table order."""

    features: torch.Tensor  # float32 [N, n_mels, clip_frames]
    track_ids: list[str]
    genres: list[str]


def load_clips(paths: WtaPaths) -> ClipSet:
    """Load the attribution clips written by `prepare_dataset`, or raise if missing."""
    features_path = paths.dataset_dir / "features.safetensors"
    if not features_path.exists():
        raise DatasetError(f"no features at {features_path}; materialise the gtzan_dataset asset first")
    tracks = TableStore(paths.database).read(
        "SELECT track_id, genre FROM tracks WHERE status = 'ok' ORDER BY feature_index")
    features = load_file(str(features_path))["features"]
    if features.shape[0] != tracks.height:
        raise DatasetError(
            f"{features_path} holds {features.shape[0]} clips but the tracks table lists {tracks.height}; "
            "materialise gtzan_dataset again"
        )
    return ClipSet(features=features, track_ids=tracks["track_id"].to_list(), genres=tracks["genre"].to_list())


def load_pretrain_clips(paths: WtaPaths) -> tuple[torch.Tensor, list[str]]:
    """Pretraining features [N, C, T] and their prompts."""
    from safetensors import safe_open

    path = paths.dataset_dir / "pretrain.safetensors"
    if not path.exists():
        raise DatasetError(f"no pretraining features at {path}; materialise the gtzan_dataset asset first")
    with safe_open(str(path), framework="pt") as handle:
        prompts = json.loads(handle.metadata()["prompts"])
        features = handle.get_tensor("features")
    return features, prompts


def genre_centroid_distances(clips: ClipSet) -> tuple[list[str], np.ndarray]:
    """Euclidean distances between genre centroids of the log-mel features: a proximity measure
    of the audio itself, independent of any model."""
    genres = sorted(set(clips.genres))
    labels = np.array(clips.genres)
    flat = clips.features.reshape(clips.features.shape[0], -1).numpy()
    centroids = np.stack([flat[labels == genre].mean(axis=0) for genre in genres])
    distances = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=-1)
    return genres, distances


__all__ = ["TRACK_COLUMNS", "prepare_dataset", "load_clips", "dataset_genres", "genre_prompts"]
