"""One candidate audio file of a dataset, whatever layout it came from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

GTZAN_STEM = re.compile(r"^(?P<genre>.+)\.(?P<number>\d+)$")


@dataclass(frozen=True)
class SourceFile:
    """A file filed under a genre; `read` returns its bytes, loaded only when needed."""

    genre: str
    name: str  # file name as found, used for format hints and AppleDouble detection
    source_path: str  # where a user finds it: a path, or "<parquet file>#row=<n>"
    read: Callable[[], bytes]
    origin: str = ""  # for rendered clips: the corpus piece it came from

    def track_id(self) -> str:
        """`<genre>.<number>` for GTZAN-style names, else `<genre>.<file stem>`."""
        stem = Path(self.name).stem
        match = GTZAN_STEM.match(stem)
        if match and match.group("genre") == self.genre:
            return stem
        return f"{self.genre}.{stem}"
