"""Shared fixtures: temporary WTA homes, a shared render cache, and small generated datasets."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

# The genre partitions are computed when wta_dagster is imported, from these settings.
os.environ["WTA_PRESET"] = "smoke"
os.environ["WTA_DATASET"] = "embedded"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def render_cache(tmp_path_factory) -> Path:
    """One render cache for the whole session, so each corpus piece is rendered once."""
    return tmp_path_factory.mktemp("render_cache")


@pytest.fixture(autouse=True)
def shared_render_cache(monkeypatch, render_cache):
    """Every test renders corpus pieces into the session's cache."""
    monkeypatch.setenv("WTA_CACHE", str(render_cache))


@pytest.fixture
def wta_env(tmp_path, monkeypatch, render_cache):
    """A fresh WTA home and Dagster instance folder with the smoke preset."""
    home = tmp_path / "home"
    monkeypatch.setenv("WTA_HOME", str(home))
    monkeypatch.setenv("WTA_CACHE", str(render_cache))
    monkeypatch.setenv("WTA_PRESET", "smoke")
    monkeypatch.setenv("WTA_DATASET", "embedded")
    return home


def tone(seconds: float, sample_rate: int, frequency: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A decaying harmonic tone with a little noise, float32 [samples, channels]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    signal = sum(np.sin(2 * np.pi * frequency * k * t) / k for k in range(1, 5))
    signal = 0.3 * signal * np.exp(-t % 0.5) + 0.01 * rng.standard_normal(len(t))
    return np.repeat(signal[:, None], channels, axis=1).astype(np.float32)


def wav_bytes(samples: np.ndarray, sample_rate: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


GENRE_FREQUENCIES = {"blues": 110.0, "jazz": 220.0, "metal": 330.0, "reggae": 440.0}


def make_gtzan(root: Path, clips: int = 3, seconds: float = 3.0, bad_cases: bool = True) -> Path:
    """A GTZAN-layout copy under `root/genres_original` with every bad case of the real archive."""
    base = root / "genres_original"
    for genre_index, (genre, frequency) in enumerate(GENRE_FREQUENCIES.items()):
        folder = base / genre
        folder.mkdir(parents=True)
        for number in range(clips):
            rate = 22_050 if number % 2 == 0 else 44_100
            channels = 2 if number == 1 else 1
            data = wav_bytes(tone(seconds, rate, frequency * (1 + 0.05 * number), channels,
                                  seed=10 * genre_index + number), rate)
            (folder / f"{genre}.{number:05d}.wav").write_bytes(data)
    if bad_cases:
        jazz = base / "jazz"
        (jazz / "jazz.00054.wav").write_bytes(b"\x00" * 64 + b"not a riff header" * 100)
        (jazz / "._jazz.00000.wav").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 200)
        (base / "blues" / "blues.00098.wav").write_bytes(b"")
        (base / "blues" / "notes.txt").write_text("liner notes, not audio")
        (base / "metal" / "metal.00097.wav").write_bytes(wav_bytes(tone(0.2, 22_050, 300.0), 22_050))
        # The same bytes filed under two genres, as in GTZAN's replicas.
        (base / "jazz" / "jazz.00099.wav").write_bytes((base / "metal" / "metal.00000.wav").read_bytes())
    return root


# Defined once here, so every module shares the session's single smoke run; a session
# fixture imported into each test module would run once per module.
from tests.pipeline_fixtures import smoke_run  # noqa: E402,F401
