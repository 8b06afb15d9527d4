"""Griffin-Lim rendering of standardised log-mels, WAV writing and spectrogram images."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from wta_core.config import AudioConfig
from wta_core.render import mel_to_audio, save_wav, spectrogram_png

AUDIO = AudioConfig(n_mels=32, clip_frames=16)


def _sine_mel(frequency: float) -> torch.Tensor:
    """Standardised log-mel [32, 16] of a sine, computed like the dataset features."""
    time = torch.arange(AUDIO.clip_samples) / AUDIO.sample_rate
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=AUDIO.sample_rate, n_fft=AUDIO.n_fft, hop_length=AUDIO.hop_length, n_mels=AUDIO.n_mels
    )(0.5 * torch.sin(2 * torch.pi * frequency * time))
    log_mel = torch.log(mel + 1e-6)
    return (log_mel - log_mel.mean()) / log_mel.std()


def test_audio_length_and_peak():
    samples = mel_to_audio(_sine_mel(440.0), AUDIO, n_iter=8)
    assert samples.shape == (AUDIO.clip_samples,)
    assert samples.dtype == np.float32
    assert np.isclose(np.abs(samples).max(), 0.9)


def test_audio_deterministic():
    mel = _sine_mel(440.0)
    assert np.array_equal(mel_to_audio(mel, AUDIO, n_iter=8), mel_to_audio(mel, AUDIO, n_iter=8))


def test_audio_keeps_pitch():
    samples = mel_to_audio(_sine_mel(1000.0), AUDIO, n_iter=16)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * AUDIO.sample_rate / len(samples)
    assert abs(peak_hz - 1000.0) < 100.0


def test_audio_rejects_wrong_bins():
    with pytest.raises(ValueError, match="mel bins|n_mels|32"):
        mel_to_audio(torch.zeros(8, 16), AUDIO)


def test_audio_rejects_nan():
    mel = _sine_mel(440.0)
    mel[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mel_to_audio(mel, AUDIO)


def test_wav_round_trip(tmp_path):
    samples = mel_to_audio(_sine_mel(440.0), AUDIO, n_iter=4)
    path = save_wav(tmp_path / "clip.wav", samples, AUDIO.sample_rate)
    data, rate = soundfile.read(path, dtype="float32")
    assert rate == AUDIO.sample_rate
    assert data.shape == samples.shape
    assert np.abs(data - samples).max() < 1e-3
    assert [item.name for item in tmp_path.iterdir()] == ["clip.wav"]


def test_png_written(tmp_path):
    path = spectrogram_png(_sine_mel(440.0), tmp_path / "mel.png", title="sine")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [item.name for item in tmp_path.iterdir()] == ["mel.png"]
