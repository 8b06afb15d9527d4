"""Rendering of standardised log-mel latents: audio by Griffin-Lim, WAV files and spectrogram images.

A latent is a log-mel clip standardised to zero mean and unit variance, so its
absolute level and dynamic range are gone. `mel_to_audio` restores an assumed level
and range in dB before inverting it. The result is for listening, not an exact
reconstruction.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import torch

from wta_core.config import AudioConfig


def _temporary_sibling(path: Path) -> Path:
    return path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}"


def mel_to_audio(
    mel_normalised: torch.Tensor,
    audio: AudioConfig,
    level_db: float = -20.0,
    spread_db: float = 20.0,
    n_iter: int = 32,
    peak: float | None = 0.9,
) -> np.ndarray:
    """Invert a standardised log-mel [n_mels, frames] to a mono float32 waveform.

    Steps:
    1. dB = mel_normalised * spread_db + level_db, read as a power mel spectrogram in dB
       (10 * log10 of power), then converted back to power.
    2. `InverseMelScale` solves for the linear-frequency power spectrogram by least squares.
    3. `GriffinLim` with `rand_init=False` estimates the phase, so the output is
       deterministic. The waveform has `hop_length * (frames - 1)` samples, the length
       whose centred STFT has `frames` frames.
    4. If `peak` is given, the waveform is scaled so that its maximum magnitude equals
       `peak`, which makes `level_db` matter only for the numerics of step 2.

    The mel filters are those of `wta_core.audio.features.log_mel`: torchaudio's
    MelSpectrogram defaults (power 2, HTK mel scale, no filter norm, f_min 0) with
    `audio`'s sample rate, n_fft and hop length. That function takes the natural log,
    not dB, but standardisation removes the log base along with the level, and
    `spread_db` sets the range anew.
    """
    import torchaudio

    mel = torch.as_tensor(mel_normalised, dtype=torch.float32).detach().cpu()
    if mel.ndim != 2 or mel.shape[0] != audio.n_mels:
        raise ValueError(f"mel_normalised must be [{audio.n_mels}, frames], got shape {list(mel.shape)}")
    if not torch.isfinite(mel).all():
        raise ValueError("mel_normalised contains NaN or infinite values; check the sampler output")

    power_mel = torch.pow(10.0, (mel * spread_db + level_db) / 10.0)
    inverse_mel = torchaudio.transforms.InverseMelScale(
        n_stft=audio.n_fft // 2 + 1, n_mels=audio.n_mels, sample_rate=audio.sample_rate
    )
    griffin_lim = torchaudio.transforms.GriffinLim(
        n_fft=audio.n_fft,
        n_iter=n_iter,
        hop_length=audio.hop_length,
        power=2.0,
        length=audio.hop_length * (mel.shape[1] - 1),
        rand_init=False,
    )
    with torch.no_grad():
        waveform = griffin_lim(inverse_mel(power_mel))

    samples = waveform.numpy().astype(np.float32)
    if peak is not None:
        maximum = float(np.max(np.abs(samples))) if samples.size else 0.0
        if maximum > 0.0:
            samples *= peak / maximum
    return samples


def save_wav(path: str | os.PathLike, audio: np.ndarray, sr: int) -> Path:
    """Write `audio` ([samples] or [samples, channels], values in [-1, 1]) as 16-bit PCM WAV, atomically."""
    import soundfile

    path = Path(path)
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise ValueError(f"audio must be [samples] or [samples, channels], got shape {list(data.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path)
    try:
        soundfile.write(str(temporary), np.clip(data, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def spectrogram_png(mel: torch.Tensor | np.ndarray, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw `mel` [n_mels, frames] as a PNG image (low bins at the bottom), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = torch.as_tensor(mel, dtype=torch.float32).detach().cpu().numpy()
    if values.ndim != 2:
        raise ValueError(f"mel must be [n_mels, frames], got shape {list(values.shape)}")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A bare Figure with an Agg canvas leaves pyplot's global state alone.
    figure = Figure(figsize=(5, 3), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(values, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
    axes.set_xlabel("frame")
    axes.set_ylabel("mel bin")
    if title:
        axes.set_title(title)
    figure.colorbar(image, ax=axes, label="standardised log-mel")
    figure.tight_layout()

    temporary = _temporary_sibling(path)
    try:
        figure.savefig(str(temporary), format="png")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
