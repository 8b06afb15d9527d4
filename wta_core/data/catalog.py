"""Turn dataset source files into the `tracks` rows and the stored log-mel features."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from wta_core.audio.decode import decode_audio
from wta_core.audio.features import clip_features, cut_clip
from wta_core.config import AudioConfig, DataConfig
from wta_core.data.sources import SourceFile
from wta_core.errors import AudioDecodeError, DatasetError

log = logging.getLogger(__name__)

TRACK_COLUMNS = (
    "track_id", "genre", "source_path", "sha256", "sample_rate", "channels", "duration_s",
    "clip_offset_s", "status", "reason", "origin", "feature_index",
)


@dataclass
class Catalog:
    """Rows of the `tracks` table and the features of the `ok` rows, in the same order."""

    rows: list[dict] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)

    @property
    def ok_rows(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "ok"]

    @property
    def skipped_rows(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "skipped"]

    def clips_per_genre(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for row in self.ok_rows:
            counts[row["genre"]] += 1
        return dict(sorted(counts.items()))

    def feature_array(self) -> np.ndarray:
        """Features of the `ok` rows as float32 [N, n_mels, clip_frames]."""
        return np.stack(self.features).astype(np.float32)


def _row(source: SourceFile, **values) -> dict:
    row = dict.fromkeys(TRACK_COLUMNS)
    row.update(track_id=source.track_id(), genre=source.genre, source_path=source.source_path,
               origin=source.origin, reason="")
    row.update(values)
    return row


def build_catalog(
    sources: list[SourceFile],
    audio: AudioConfig,
    data: DataConfig,
    require_all_genres: bool = True,
) -> Catalog:
    """Decode, de-duplicate and featurise `sources`; every file gets exactly one row.

    Files are taken in (genre, track id) order. Bad files get status `skipped` and a reason.
    A genre keeps at most `data.clips_per_genre` clips; later usable files are recorded as
    skipped for that reason. With `require_all_genres`, a genre left with no usable clip
    raises `DatasetError`.
    """
    ordered = sorted(sources, key=lambda s: (s.genre, s.track_id(), s.source_path))
    genres = sorted({s.genre for s in ordered})
    if data.max_genres is not None:
        genres = genres[: data.max_genres]
    kept_genres = set(genres)

    catalog = Catalog()
    first_by_hash: dict[str, dict] = {}
    duplicate_genres: dict[str, set[str]] = defaultdict(set)
    used_ids: set[str] = set()
    counts: dict[str, int] = defaultdict(int)

    for source in ordered:
        if source.genre not in kept_genres:
            continue
        payload = source.read()
        digest = hashlib.sha256(payload).hexdigest()
        track_id = source.track_id()
        if track_id in used_ids:
            track_id = f"{track_id}.{digest[:8]}"
        used_ids.add(track_id)

        if digest in first_by_hash and payload:
            original = first_by_hash[digest]
            duplicate_genres[digest].add(source.genre)
            reason = (f"duplicate of {original['track_id']} (same bytes), filed under genres "
                      f"{sorted(duplicate_genres[digest] | {original['genre']})}")
            catalog.rows.append(_row(source, track_id=track_id, sha256=digest, status="skipped", reason=reason))
            continue

        try:
            decoded = decode_audio(payload, source.name)
            row_values = dict(sample_rate=decoded.sample_rate, channels=decoded.channels,
                              duration_s=round(decoded.duration_s, 4))
            if counts[source.genre] >= data.clips_per_genre:
                catalog.rows.append(_row(source, track_id=track_id, sha256=digest, status="skipped",
                                         reason=f"over the preset's {data.clips_per_genre} clips per genre",
                                         **row_values))
                continue
            clip = cut_clip(decoded, audio, data.min_track_seconds)
            features = clip_features(clip, audio)
        except AudioDecodeError as error:
            log.warning("skipped %s: %s", source.source_path, error)
            catalog.rows.append(_row(source, track_id=track_id, sha256=digest, status="skipped", reason=str(error)))
            if payload:
                first_by_hash.setdefault(digest, {"track_id": track_id, "genre": source.genre})
            continue

        row = _row(source, track_id=track_id, sha256=digest, status="ok",
                   clip_offset_s=round(clip.offset_s, 4), feature_index=len(catalog.features), **row_values)
        catalog.rows.append(row)
        catalog.features.append(features)
        first_by_hash[digest] = {"track_id": track_id, "genre": source.genre}
        counts[source.genre] += 1

    if require_all_genres:
        empty = [genre for genre in genres if counts[genre] == 0]
        if empty:
            reasons = {row["genre"]: row["reason"] for row in catalog.skipped_rows if row["genre"] in empty}
            raise DatasetError(
                f"genres {empty} have no usable clips (for example: {reasons}); every genre folder "
                "needs at least one decodable audio file longer than "
                f"{data.min_track_seconds} s. Fix or remove those folders."
            )
        if len(genres) < 2:
            raise DatasetError(
                f"found {len(genres)} genre(s) {genres}; leave-one-genre-out attribution needs at least 2"
            )
    return catalog
