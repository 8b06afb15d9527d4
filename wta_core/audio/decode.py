"""Decode audio bytes into float waveforms.

Decoding uses libsndfile through `soundfile` (WAV, AU, FLAC, OGG, MP3 and more). torchaudio
2.9 and later decode only through TorchCodec, which needs system FFmpeg libraries; libsndfile
ships inside the soundfile wheel, so the project installs from PyPI alone. torchaudio still
does all resampling and feature work.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile

from wta_core.errors import AudioDecodeError

APPLEDOUBLE_MAGIC = b"\x00\x05\x16\x07"


@dataclass(frozen=True)
class DecodedAudio:
    """A waveform as float32 [channels, samples] in [-1, 1] with its sample rate in Hz."""

    waveform: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def duration_s(self) -> float:
        return self.waveform.shape[1] / self.sample_rate


def is_appledouble(name: str, data: bytes) -> bool:
    """Return True for a macOS `._name` resource-fork companion, which contains no audio."""
    return name.startswith("._") or data[:4] == APPLEDOUBLE_MAGIC


def decode_audio(data: bytes, name: str) -> DecodedAudio:
    """Decode `data` (the bytes of file `name`) or raise `AudioDecodeError` with a plain reason.

    The reason is written for the `tracks.reason` column, so it names the problem, not a stack.
    """
    if len(data) == 0:
        raise AudioDecodeError("empty file (0 bytes)")
    if is_appledouble(name, data):
        raise AudioDecodeError("macOS AppleDouble companion file (._*), not audio")
    if name.lower().endswith(".wav") and data[:4] not in (b"RIFF", b"RIFX", b"RF64"):
        raise AudioDecodeError(
            f"corrupt WAV: no RIFF header (first bytes {data[:4]!r}); re-export or replace the file"
        )
    try:
        samples, sample_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        detail = getattr(error, "error_string", "") or str(error)
        raise AudioDecodeError(f"not decodable as audio ({detail.strip()})") from error
    if samples.size == 0:
        raise AudioDecodeError("decodes to zero samples")
    waveform = np.ascontiguousarray(samples.T)
    if not np.all(np.isfinite(waveform)):
        raise AudioDecodeError("decodes to non-finite samples (NaN or infinity)")
    return DecodedAudio(waveform=waveform, sample_rate=int(sample_rate))
