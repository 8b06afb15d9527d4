"""Resources: where artifacts live, which dataset and preset a run uses, and where training runs."""

from __future__ import annotations

import os

import dagster as dg

from wta_core.config import DEFAULT_PRESET, RunConfig, get_preset
from wta_core.paths import WtaPaths, bind_preset, resolve_home
from wta_core.storage import TableStore


class WtaSettings(dg.ConfigurableResource):
    """The settings a user changes without editing code.

    Each field left empty falls back to its environment variable (`WTA_HOME`, `WTA_DATASET`,
    `WTA_PRESET`, `WTA_CLAP_WEIGHTS`) and then to the default (`.wta/`, `embedded`, `demo`, no
    CLAP), so runs launched from the CLI and from the UI read the same values.
    """

    home: str = ""
    dataset: str = ""
    preset: str = ""
    clap_weights: str = ""

    def clap_weights_path(self) -> str | None:
        """Local LAION-CLAP checkpoint for the embedding method of `method_comparison`, or None."""
        return self.clap_weights or os.environ.get("WTA_CLAP_WEIGHTS") or None

    def preset_name(self) -> str:
        return self.preset or os.environ.get("WTA_PRESET") or DEFAULT_PRESET

    def dataset_name(self) -> str:
        return self.dataset or os.environ.get("WTA_DATASET") or "embedded"

    def run_config(self) -> RunConfig:
        return get_preset(self.preset_name())

    def paths(self) -> WtaPaths:
        """The home's folder layout; binds the home to this preset on first use."""
        paths = WtaPaths(resolve_home(self.home or None))
        bind_preset(paths, self.preset_name())
        return paths

    def store(self) -> TableStore:
        return TableStore(self.paths().database)
