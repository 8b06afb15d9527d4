"""Mono downmix, resampling, clip selection and normalised log-mel features."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torchaudio

from wta_core.audio.decode import DecodedAudio
from wta_core.config import AudioConfig
from wta_core.errors import AudioDecodeError

SILENCE_PEAK = 1e-3  # about -60 dBFS; quieter clips carry no music to learn from
LONG_TRACK_CLIPS = 4  # tracks at least this many clips long are cut from their middle
LOG_FLOOR = 1e-6  # added to mel power before the logarithm


@dataclass(frozen=True)
class Clip:
    """One fixed-length mono clip and where it was cut from the source."""

    waveform: np.ndarray  # float32 [samples] at AudioConfig.sample_rate
    offset_s: float  # start of the clip in the source, seconds


def to_mono(audio: DecodedAudio) -> np.ndarray:
    """Average all channels into one float32 signal."""
    return audio.waveform.mean(axis=0).astype(np.float32)


def resample(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample with torchaudio's band-limited sinc interpolation."""
    if source_rate == target_rate:
        return signal
    tensor = torch.from_numpy(np.ascontiguousarray(signal))
    return torchaudio.functional.resample(tensor, source_rate, target_rate).numpy()


def first_sound_index(signal: np.ndarray, sample_rate: int) -> int:
    """Index of the first 10 ms block whose peak exceeds the silence level, else 0."""
    block = max(1, sample_rate // 100)
    usable = len(signal) // block * block
    if usable == 0:
        return 0
    peaks = np.abs(signal[:usable]).reshape(-1, block).max(axis=1)
    loud = np.flatnonzero(peaks > SILENCE_PEAK)
    return int(loud[0] * block) if loud.size else 0


def cut_clip(audio: DecodedAudio, config: AudioConfig, min_seconds: float) -> Clip:
    """Downmix, resample and cut one clip, or raise `AudioDecodeError` with the reason.

    Long tracks (GTZAN's 30 s excerpts) give their middle clip; shorter ones start at their
    first sound, and a source a little shorter than a clip is zero-padded at the end.
    """
    if audio.duration_s < min_seconds:
        raise AudioDecodeError(
            f"too short: {audio.duration_s:.2f} s, at least {min_seconds:.2f} s is needed"
        )
    signal = resample(to_mono(audio), audio.sample_rate, config.sample_rate)
    length = config.clip_samples
    if len(signal) >= LONG_TRACK_CLIPS * length:
        start = (len(signal) - length) // 2
    else:
        start = min(first_sound_index(signal, config.sample_rate), max(0, len(signal) - length))
    clip = signal[start:start + length]
    if len(clip) < length:
        clip = np.pad(clip, (0, length - len(clip)))
    if float(np.max(np.abs(clip))) < SILENCE_PEAK:
        raise AudioDecodeError("silent: the clip's peak is below -60 dBFS")
    return Clip(waveform=clip.astype(np.float32), offset_s=start / config.sample_rate)


@lru_cache(maxsize=4)
def _mel_transform(config: AudioConfig) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        center=True,
        power=2.0,
    )


def log_mel(waveform: np.ndarray, config: AudioConfig) -> np.ndarray:
    """Log mel power [n_mels, clip_frames] of one clip, before normalisation."""
    with torch.no_grad():
        mel = _mel_transform(config)(torch.from_numpy(waveform))
    frames = mel[:, : config.clip_frames]
    return torch.log(frames + LOG_FLOOR).numpy().astype(np.float32)


def normalise(features: np.ndarray) -> np.ndarray:
    """Standardise one clip's log-mel to zero mean and unit variance over bins and frames.

    Per-clip standardisation makes the latent independent of loudness and of which other
    clips are in the dataset, so every subset of one run shares the same latent space.
    """
    std = float(features.std())
    if std < 1e-8:
        raise AudioDecodeError("constant spectrum: the clip has no variation to learn from")
    return ((features - features.mean()) / std).astype(np.float32)


def clip_features(clip: Clip, config: AudioConfig) -> np.ndarray:
    """Normalised log-mel latent [n_mels, clip_frames] of one clip."""
    return normalise(log_mel(clip.waveform, config))
