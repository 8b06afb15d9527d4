"""Scan a GTZAN folder: `<root>/<genre>/<genre>.000NN.wav`, or the original `.au` files."""

from __future__ import annotations

from pathlib import Path

from wta_core.data.sources import SourceFile
from wta_core.errors import DatasetError

# Folders that hold the genre folders in the common GTZAN archives.
CONTAINER_NAMES = ("genres_original", "genres", "Data/genres_original", "data/genres_original")
EXPECTED_LAYOUT = (
    "expected <root>/<genre>/<genre>.000NN.wav (or .au), optionally under genres_original/ "
    "or genres/, or a Hugging Face copy saved on disk (parquet or arrow files)"
)


def find_genre_root(root: Path) -> Path:
    """Return the folder whose subfolders are the genres, or raise `DatasetError`."""
    for name in CONTAINER_NAMES:
        candidate = root / name
        if candidate.is_dir() and _genre_folders(candidate):
            return candidate
    if _genre_folders(root):
        return root
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:20]
    raise DatasetError(
        f"no genre folders with audio files found in {root}; found: {found or 'nothing'}; "
        f"{EXPECTED_LAYOUT}"
    )


def _genre_folders(folder: Path) -> list[Path]:
    """Subfolders that contain at least one regular file whose name does not start with '.'."""
    genres = []
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or child.name.startswith((".", "_")):
            continue
        if any(f.is_file() and not f.name.startswith(".") for f in child.iterdir()):
            genres.append(child)
    return genres


def list_genres(root: Path) -> list[str]:
    """Genre names of a GTZAN folder, sorted."""
    return [folder.name for folder in _genre_folders(find_genre_root(root))]


def scan_gtzan(root: Path) -> list[SourceFile]:
    """List every regular file under each genre folder; decoding decides what is audio."""
    genre_root = find_genre_root(root)
    sources = []
    for folder in _genre_folders(genre_root):
        for path in sorted(folder.iterdir()):
            if not path.is_file():
                continue
            sources.append(
                SourceFile(
                    genre=folder.name,
                    name=path.name,
                    source_path=str(path),
                    read=path.read_bytes,
                )
            )
    return sources
