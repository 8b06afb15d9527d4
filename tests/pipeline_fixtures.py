"""A smoke run of the whole main job, shared by the pipeline tests of one session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def prepare_home(home: Path, render_cache: Path) -> dict[str, str]:
    """Environment for a WTA home with its own Dagster instance, as scripts/env.sh sets it."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return {"WTA_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "WTA_PRESET": "smoke",
            "WTA_DATASET": "embedded", "WTA_CACHE": str(render_cache)}


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, render_cache) -> Path:
    """Run the main job on the smoke preset once; return the WTA home."""
    from wta_dagster.main import main

    home = tmp_path_factory.mktemp("smoke") / "home"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in prepare_home(home, render_cache).items():
            patch.setenv(key, value)
        assert main([]) == 0
    return home


def copy_home(source: Path, target: Path) -> Path:
    """Copy a finished home, without its lock files, for a test that writes into it."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock"))
    return target


def subprocess_env(home: Path, render_cache: Path) -> dict[str, str]:
    return dict(os.environ) | prepare_home(home, render_cache)


@pytest.fixture
def cli_env(home, render_cache, monkeypatch) -> Path:
    """The settings scripts/env.sh would export for the module's `home`, with one torch thread.

    For in-process `main` calls; the module that uses it defines the `home` fixture.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for key, value in prepare_home(home, render_cache).items():
        monkeypatch.setenv(key, value)
    yield home
    torch.set_num_threads(threads)
