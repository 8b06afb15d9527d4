"""Embedding-similarity attribution on harmonic tones, through waveforms and through rendered log-mels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny_denoiser import single_thread  # noqa: F401  (autouse fixture)
from wta_core.audio.features import log_mel, normalise
from wta_core.comparison.embedding import (
    EMBEDDING_MFCC_CHROMA,
    cosine_similarity,
    embedding_attribution,
    fit_audio_embedding,
    mfcc_chroma_embedding,
    similarity_matrix,
)
from wta_core.comparison.metrics import retraining_effect
from wta_core.config import AudioConfig
from wta_core.errors import ConfigError, UnsafeFileError

AUDIO = AudioConfig(n_mels=64, clip_frames=32)
GENRES = ("low", "mid", "high")
FREQUENCIES = {"low": 196.0, "mid": 330.0, "high": 587.0}


def _tone(frequency: float, seed: int) -> np.ndarray:
    """A harmonic tone of one clip's length with a little noise, float32 [samples]."""
    rng = np.random.default_rng(seed)
    time = np.arange(AUDIO.clip_samples) / AUDIO.sample_rate
    signal = sum(np.sin(2 * np.pi * frequency * k * time) / k for k in range(1, 4))
    return (0.3 * signal + 0.005 * rng.standard_normal(time.size)).astype(np.float32)


def _training_set() -> tuple[np.ndarray, list[str]]:
    """Three clips per genre, each detuned by up to 2%."""
    waveforms, labels = [], []
    for genre in GENRES:
        for index in range(3):
            waveforms.append(_tone(FREQUENCIES[genre] * (1 + 0.01 * (index - 1)), seed=len(waveforms)))
            labels.append(genre)
    return np.stack(waveforms), labels


def _mel(waveform: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(normalise(log_mel(waveform, AUDIO)))


def test_feature_vector_length():
    assert mfcc_chroma_embedding(_tone(330.0, 0), AUDIO.sample_rate).shape == (64,)


def test_same_tone_scores_highest():
    waveforms, labels = _training_set()
    space, clips = fit_audio_embedding(waveforms, AUDIO)
    generated = space.embed_waveforms(np.stack([_tone(FREQUENCIES[genre] * 1.005, seed=50) for genre in GENRES]))
    matrix = similarity_matrix(generated[:, None], clips, labels, GENRES)
    assert np.array_equal(np.argmax(matrix, axis=0), [0, 1, 2])


def test_centroid_same_tone_highest():
    waveforms, labels = _training_set()
    space, clips = fit_audio_embedding(waveforms, AUDIO)
    generated = space.embed_waveforms(_tone(FREQUENCIES["high"], seed=60)[None])
    matrix = similarity_matrix(generated[:, None], clips, labels, GENRES, reduce="centroid")
    assert int(np.argmax(matrix[:, 0])) == 2


def test_standardised_on_training_clips():
    waveforms, _ = _training_set()
    _, clips = fit_audio_embedding(waveforms, AUDIO)
    np.testing.assert_allclose(clips.mean(axis=0), 0.0, atol=1e-9)


def test_rendered_mels_same_tone_highest():
    waveforms, labels = _training_set()
    clip_features = torch.stack([_mel(waveform) for waveform in waveforms])
    generated = torch.stack([_mel(_tone(FREQUENCIES[genre] * 1.005, seed=70)) for genre in GENRES])
    scores, space = embedding_attribution(
        generated[:, None], clip_features, labels, GENRES, GENRES, AUDIO, n_iter=8
    )
    assert np.array_equal(np.argmax(scores.matrix, axis=0), [0, 1, 2])
    assert scores.method == "embedding-mfcc-chroma"
    assert scores.details["embedding"] == EMBEDDING_MFCC_CHROMA
    assert scores.retrainings == 0
    assert space.name == EMBEDDING_MFCC_CHROMA


def test_embed_latents_keeps_leading_axes():
    waveforms, _ = _training_set()
    space, _ = fit_audio_embedding(waveforms, AUDIO, n_iter=4)
    latents = torch.stack([_mel(waveform) for waveform in waveforms[:4]]).reshape(2, 2, 64, 32)
    assert space.embed_latents(latents).shape == (2, 2, 64)


def test_cosine_zero_row_is_zero():
    similarity = cosine_similarity(np.zeros((1, 3)), np.ones((2, 3)))
    assert np.array_equal(similarity, np.zeros((1, 2)))


def test_genre_without_clips_raises():
    with pytest.raises(ValueError, match="no training clip"):
        similarity_matrix(np.ones((1, 1, 2)), np.ones((2, 2)), ["low", "low"], ["low", "mid"])


def test_clap_pickle_weights_rejected(tmp_path):
    waveforms, _ = _training_set()
    with pytest.raises(UnsafeFileError):
        fit_audio_embedding(waveforms, AUDIO, clap_weights=tmp_path / "clap.pt")


def test_clap_missing_weights_raise(tmp_path):
    waveforms, _ = _training_set()
    with pytest.raises(ConfigError, match="not found"):
        fit_audio_embedding(waveforms, AUDIO, clap_weights=tmp_path / "clap.safetensors")


def test_clap_falls_back_without_package(tmp_path):
    pytest.importorskip("safetensors")
    try:
        import laion_clap  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("laion_clap is installed, so there is no fallback to test")
    weights = tmp_path / "clap.safetensors"
    weights.write_bytes(b"not read without laion_clap")
    waveforms, _ = _training_set()
    space, _ = fit_audio_embedding(waveforms, AUDIO, clap_weights=weights)
    assert space.name == EMBEDDING_MFCC_CHROMA


def test_retraining_effect_identical_is_zero():
    waveforms, _ = _training_set()
    space, _ = fit_audio_embedding(waveforms, AUDIO, n_iter=4)
    full = torch.stack([_mel(waveform) for waveform in waveforms[:2]]).reshape(2, 1, 64, 32)
    effect = retraining_effect(space, full, {"low": full.clone(), "mid": full.clone()}, ["low", "mid"], ["p0", "p1"])
    assert np.array_equal(effect.matrix, np.zeros((2, 2)))


def test_retraining_effect_changed_output():
    waveforms, _ = _training_set()
    space, _ = fit_audio_embedding(waveforms, AUDIO, n_iter=4)
    full = torch.stack([_mel(waveforms[0]), _mel(waveforms[3])]).reshape(2, 1, 64, 32)
    changed = full.clone()
    changed[1, 0] = _mel(waveforms[8])  # prompt 1 now sounds like a "high" clip
    effect = retraining_effect(space, full, {"low": full.clone(), "mid": changed}, ["low", "mid"], ["p0", "p1"])
    assert effect.matrix[1, 1] > 0
    assert effect.matrix[1, 0] == 0.0
    assert effect.matrix[0].sum() == 0.0
    assert effect.definition.startswith("leave-one-genre-out effect: Euclidean distance between standardised mfcc")
