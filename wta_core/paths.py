"""Layout of every artifact under the WTA home folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".wta"


def resolve_home(value: str | os.PathLike | None = None) -> Path:
    """Return the absolute WTA home: `value`, else `$WTA_HOME`, else `.wta/` in the working directory."""
    raw = value if value not in (None, "") else os.environ.get("WTA_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class WtaPaths:
    """Folders and files below one WTA home. Creating them is the caller's job.

    One home contains one preset's run (see `bind_preset`), so use another home for another preset.
    """

    home: Path

    @property
    def database(self) -> Path:
        return self.home / "wta.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def render_cache(self) -> Path:
        """Embedded corpus rendered to WAV once and reused: `$WTA_CACHE`, else `cache/embedded`.

        Rendering depends only on the piece and the instrument, so homes may share one cache.
        """
        shared = os.environ.get("WTA_CACHE")
        return Path(shared).resolve() if shared else self.home / "cache" / "embedded"

    @property
    def dataset_dir(self) -> Path:
        return self.home / "dataset"

    @property
    def features_dir(self) -> Path:
        return self.dataset_dir / "features"

    @property
    def base_model_dir(self) -> Path:
        return self.home / "base_model"

    def adapter_dir(self, adapter_id: str) -> Path:
        return self.home / "adapters" / adapter_id

    def checkpoint_dir(self, adapter_id: str) -> Path:
        return self.home / "checkpoints" / adapter_id

    @property
    def trajectory_dir(self) -> Path:
        return self.home / "trajectories"

    @property
    def audio_dir(self) -> Path:
        return self.home / "audio"

    @property
    def report_dir(self) -> Path:
        return self.home / "reports"


def bind_preset(paths: WtaPaths, preset: str) -> None:
    """Record `preset` as the home's preset, or raise if the home already contains another one.

    The DuckDB tables have no preset column, so mixing presets in one home would mix rows.
    """
    from wta_core.errors import ConfigError

    marker = paths.home / "preset"
    paths.home.mkdir(parents=True, exist_ok=True)
    if marker.exists():
        existing = marker.read_text(encoding="utf-8").strip()
        if existing != preset:
            raise ConfigError(
                f"WTA_HOME {paths.home} holds a {existing!r} run but WTA_PRESET is {preset!r}; "
                f"set WTA_HOME to another folder for {preset!r}, or delete {paths.home} to start over"
            )
        return
    # Written under another name and renamed, so a killed run never leaves an empty marker
    # that would bind the home to no preset.
    temporary = marker.with_name("preset.tmp")
    temporary.write_text(preset + "\n", encoding="utf-8")
    temporary.replace(marker)
