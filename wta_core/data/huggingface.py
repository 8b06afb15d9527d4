"""Read a Hugging Face copy of GTZAN saved on disk: parquet files or `save_to_disk` arrow files.

Each row holds the audio as a struct with `bytes` (and usually `path`) and a genre, either as
a string column (`genre`) or as a class-label integer (`label`, `genre`) whose names come from
the dataset's feature metadata. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

from wta_core.data.sources import SourceFile
from wta_core.errors import DatasetError

AUDIO_COLUMNS = ("audio", "file", "wav")
LABEL_COLUMNS = ("genre", "label", "labels", "genre_label")


def is_huggingface_copy(root: Path) -> bool:
    """Return True when `root` contains parquet or arrow files anywhere below it."""
    return any(root.rglob("*.parquet")) or any(root.rglob("*.arrow"))


def _read_table(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    with path.open("rb") as handle:
        try:
            return pyarrow.ipc.open_stream(handle).read_all()
        except pa.ArrowInvalid:
            handle.seek(0)
            return pyarrow.ipc.open_file(handle).read_all()


def _features_from_metadata(table: pa.Table, path: Path) -> dict:
    """Read the `features` dict of the datasets library from schema metadata or dataset_info.json."""
    metadata = table.schema.metadata or {}
    if b"huggingface" in metadata:
        info = json.loads(metadata[b"huggingface"])
        features = info.get("info", {}).get("features")
        if features:
            return features
    for folder in (path.parent, path.parent.parent):
        info_path = folder / "dataset_info.json"
        if info_path.exists():
            return json.loads(info_path.read_text(encoding="utf-8")).get("features", {})
    return {}


def _label_names(features: dict, column: str) -> list[str] | None:
    feature = features.get(column, {})
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
        return list(feature.get("names", []))
    return None


def _pick(columns: list[str], candidates: tuple[str, ...], path: Path, what: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise DatasetError(
        f"{path} has no {what} column; found columns {columns}, expected one of {list(candidates)}"
    )


def scan_huggingface(root: Path) -> list[SourceFile]:
    """List every row of every parquet or arrow file below `root` as a `SourceFile`."""
    files = sorted(root.rglob("*.parquet")) or sorted(root.rglob("*.arrow"))
    sources: list[SourceFile] = []
    for path in files:
        table = _read_table(path)
        columns = table.column_names
        audio_column = _pick(columns, AUDIO_COLUMNS, path, "audio")
        label_column = _pick(columns, LABEL_COLUMNS, path, "genre label")
        labels = table.column(label_column).to_pylist()
        names = _label_names(_features_from_metadata(table, path), label_column)
        audio = table.column(audio_column).to_pylist()
        for row, (item, label) in enumerate(zip(audio, labels)):
            genre = _genre_name(label, names, path, row)
            data, name = _audio_bytes(item, row)
            sources.append(
                SourceFile(
                    genre=genre,
                    name=name,
                    source_path=f"{path}#row={row}",
                    read=(lambda payload=data: payload),
                )
            )
    return sources


def _genre_name(label, names: list[str] | None, path: Path, row: int) -> str:
    if isinstance(label, str):
        return label
    if isinstance(label, int) and names is not None and 0 <= label < len(names):
        return names[label]
    raise DatasetError(
        f"{path} row {row}: genre label {label!r} has no name; save the copy with its "
        "ClassLabel features (dataset_info.json) or a string genre column"
    )


def _audio_bytes(item, row: int) -> tuple[bytes, str]:
    """Bytes and a file name of one audio cell; a missing cell becomes an empty file."""
    if isinstance(item, dict):
        data = item.get("bytes") or b""
        name = Path(item.get("path") or f"row{row:05d}.wav").name
        return data, name
    if isinstance(item, (bytes, bytearray)):
        return bytes(item), f"row{row:05d}.wav"
    return b"", f"row{row:05d}.wav"
