"""Embedding-similarity attribution: how close a generation sounds to each genre's training clips.

This is the approach of most music-attribution tools. Generated audio and training
audio are mapped into one embedding space, and a genre's score for a generation is
the cosine similarity between them. It needs no retraining and no model access.

Both sides go through the same path. The generated final latent and every training
clip's feature are standardised log-mels, and `wta_core.render.mel_to_audio` turns
each into a waveform by Griffin-Lim before it is embedded. The training clips are
rendered too, instead of read from their source audio, so that Griffin-Lim's
artefacts are on both sides and do not by themselves set generations apart.

Two embeddings are available:

* "clap": LAION-CLAP audio embeddings. It is used only when `laion_clap` is importable
  and the caller passes a local weights file, because nothing is downloaded.
* "mfcc-chroma" (otherwise): per clip, the mean and standard deviation over frames of
  20 MFCCs and 12 chroma bins, computed with librosa, 64 values in all. Each dimension
  is then standardised with the mean and standard deviation of the training clips, so
  the energy coefficient MFCC 0 does not dominate the cosine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wta_core.comparison.method import METHOD_EMBEDDING_PREFIX, MethodScores
from wta_core.config import AudioConfig
from wta_core.errors import ArtifactError, ConfigError
from wta_core.model import reject_pickle_file
from wta_core.render import mel_to_audio

logger = logging.getLogger(__name__)

EMBEDDING_MFCC_CHROMA = "mfcc-chroma"
EMBEDDING_CLAP = "clap"
REDUCTIONS = ("mean", "centroid")

N_MFCC = 20
N_CHROMA = 12
# Mel bands under the MFCCs. Rendered audio comes from a log-mel latent of 64 bands by
# default, so librosa's default of 128 bands would add no detail.
MFCC_MELS = 64
CLAP_SAMPLE_RATE = 48_000  # LAION-CLAP's audio encoders expect 48 kHz input
CLAP_BATCH = 16  # waveforms per CLAP forward pass

_MIN_SCALE = 1e-8  # a training-set standard deviation below this leaves the dimension unscaled


def mfcc_chroma_embedding(
    waveform: np.ndarray, sample_rate: int, n_fft: int = 1024, hop_length: int = 512
) -> np.ndarray:
    """Compute the mean and standard deviation over frames of 20 MFCCs and 12 chroma bins.

    Returns a float64 vector of 64 values: MFCC means, MFCC standard deviations, chroma
    means, chroma standard deviations. Chroma uses a fixed tuning of 0 cents, so every
    clip shares one pitch grid. librosa's per-clip tuning estimate would shift the
    bins from clip to clip, and its first call compiled numba code for about 20 s
    (librosa 0.11 on two shared CPU cores).
    """
    import librosa

    signal = np.asarray(waveform, dtype=np.float32)
    if signal.ndim != 1 or signal.size < n_fft:
        raise ValueError(f"waveform must be 1-D with at least n_fft={n_fft} samples, got shape {signal.shape}")
    power = np.abs(librosa.stft(signal, n_fft=n_fft, hop_length=hop_length)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=sample_rate, n_mels=MFCC_MELS)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)
    chroma = librosa.feature.chroma_stft(S=power, sr=sample_rate, n_fft=n_fft, tuning=0.0, n_chroma=N_CHROMA)
    parts = [mfcc.mean(axis=1), mfcc.std(axis=1), chroma.mean(axis=1), chroma.std(axis=1)]
    return np.concatenate(parts).astype(np.float64)


def render_latents(latents: torch.Tensor, audio: AudioConfig, n_iter: int = 32) -> np.ndarray:
    """Render standardised log-mels [..., n_mels, frames] to waveforms [..., samples] with `mel_to_audio`."""
    latents = torch.as_tensor(latents, dtype=torch.float32)
    if latents.ndim < 2:
        raise ValueError(f"latents must be [..., n_mels, frames], got shape {list(latents.shape)}")
    flat = latents.reshape(-1, *latents.shape[-2:])
    waveforms = np.stack([mel_to_audio(mel, audio, n_iter=n_iter) for mel in flat])
    return waveforms.reshape(*latents.shape[:-2], waveforms.shape[-1])


@dataclass(frozen=True)
class AudioEmbedding:
    """An audio embedding space fitted on the training clips: raw embedding plus standardisation.

    For "mfcc-chroma", `mean` and `scale` are the per-dimension mean and standard deviation
    of the training clips. For "clap" they are 0 and 1, because CLAP embeddings are
    compared by cosine as they come.
    """

    name: str  # EMBEDDING_MFCC_CHROMA or EMBEDDING_CLAP
    audio: AudioConfig  # sample rate and STFT of the waveforms, and of rendering
    mean: np.ndarray  # [D]
    scale: np.ndarray  # [D]
    n_iter: int = 32  # Griffin-Lim iterations when latents are rendered
    clap_model: object | None = None

    def raw_embeddings(self, waveforms: np.ndarray) -> np.ndarray:
        """Embed waveforms [N, samples] at `audio.sample_rate` into [N, D], before standardisation."""
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be [N, samples], got shape {waveforms.shape}")
        if self.name == EMBEDDING_CLAP:
            return _clap_embeddings(self.clap_model, waveforms, self.audio.sample_rate)
        return np.stack([
            mfcc_chroma_embedding(waveform, self.audio.sample_rate, self.audio.n_fft, self.audio.hop_length)
            for waveform in waveforms
        ])

    def embed_waveforms(self, waveforms: np.ndarray) -> np.ndarray:
        """Embed waveforms [N, samples] into standardised embeddings [N, D]."""
        return (self.raw_embeddings(waveforms) - self.mean) / self.scale

    def embed_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Render standardised log-mels [..., n_mels, frames] and embed them into [..., D]."""
        latents = torch.as_tensor(latents, dtype=torch.float32)
        waveforms = render_latents(latents, self.audio, self.n_iter)
        flat = self.embed_waveforms(waveforms.reshape(-1, waveforms.shape[-1]))
        return flat.reshape(*latents.shape[:-2], flat.shape[-1])


def fit_audio_embedding(
    clip_waveforms: np.ndarray,
    audio: AudioConfig,
    clap_weights: str | os.PathLike | None = None,
    n_iter: int = 32,
    clap_audio_model: str = "HTSAT-base",
) -> tuple[AudioEmbedding, np.ndarray]:
    """Choose the embedding, fit its standardisation on the training clips, and embed them.

    `clip_waveforms` is [N, samples] at `audio.sample_rate`. CLAP runs when `clap_weights`
    names a local safetensors file and `laion_clap` is importable. Given weights without
    `laion_clap`, it logs a warning and falls back to "mfcc-chroma". `clap_audio_model`
    is laion_clap's audio encoder name, which must match the checkpoint. Returns the
    fitted space and the standardised training embeddings [N, D].
    """
    clap_model = _load_clap(clap_weights, clap_audio_model) if clap_weights is not None else None
    name = EMBEDDING_CLAP if clap_model is not None else EMBEDDING_MFCC_CHROMA
    unfitted = AudioEmbedding(name, audio, np.zeros(1), np.ones(1), n_iter, clap_model)
    raw = unfitted.raw_embeddings(clip_waveforms)

    if name == EMBEDDING_CLAP:
        mean, scale = np.zeros(raw.shape[1]), np.ones(raw.shape[1])
    else:
        mean = raw.mean(axis=0)
        spread = raw.std(axis=0)
        scale = np.where(spread > _MIN_SCALE, spread, 1.0)
    space = AudioEmbedding(name, audio, mean, scale, n_iter, clap_model)
    return space, (raw - mean) / scale


def cosine_similarity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the cosine similarities [N, M] between rows of `first` [N, D] and `second` [M, D].

    A row of zeros has similarity 0 to everything, instead of NaN.
    """
    first = np.asarray(first, dtype=float)
    second = np.asarray(second, dtype=float)
    first_norm = np.linalg.norm(first, axis=1, keepdims=True)
    second_norm = np.linalg.norm(second, axis=1, keepdims=True)
    first_unit = np.divide(first, first_norm, out=np.zeros_like(first), where=first_norm > 0)
    second_unit = np.divide(second, second_norm, out=np.zeros_like(second), where=second_norm > 0)
    return first_unit @ second_unit.T


def similarity_matrix(
    generated: np.ndarray,
    clip_embeddings: np.ndarray,
    clip_genres: Sequence[str],
    genres: Sequence[str],
    reduce: str = "mean",
) -> np.ndarray:
    """Return per-genre cosine similarities [G, P] of generations [P, S, D] to the training clips [N, D].

    With `reduce="mean"` a genre's score is the mean cosine similarity to each of its
    clips. With "centroid" it is the cosine similarity to the mean of its clips'
    embeddings. Either way the score is averaged over the S seeds of a prompt.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    generated = np.asarray(generated, dtype=float)
    clip_embeddings = np.asarray(clip_embeddings, dtype=float)
    if generated.ndim != 3:
        raise ValueError(f"generated must be [prompts, seeds, D], got shape {generated.shape}")
    if clip_embeddings.ndim != 2 or clip_embeddings.shape[1] != generated.shape[2]:
        raise ValueError(
            f"clip_embeddings must be [N, {generated.shape[2]}] to match the generations, got {clip_embeddings.shape}"
        )
    labels = np.asarray(clip_genres)
    if labels.shape != (clip_embeddings.shape[0],):
        raise ValueError(f"got {labels.size} clip genres for {clip_embeddings.shape[0]} clip embeddings")

    n_prompts, n_seeds, dim = generated.shape
    flat = generated.reshape(n_prompts * n_seeds, dim)
    matrix = np.empty((len(genres), n_prompts))
    for index, genre in enumerate(genres):
        members = clip_embeddings[labels == genre]
        if members.shape[0] == 0:
            raise ValueError(f"genre {genre!r} has no training clip; every scored genre needs at least one")
        if reduce == "centroid":
            members = members.mean(axis=0, keepdims=True)
        similarity = cosine_similarity(flat, members).mean(axis=1)
        matrix[index] = similarity.reshape(n_prompts, n_seeds).mean(axis=1)
    return matrix


def embedding_attribution(
    final_latents: torch.Tensor,
    clip_features: torch.Tensor,
    clip_genres: Sequence[str],
    genres: Sequence[str],
    prompt_genres: Sequence[str],
    audio: AudioConfig,
    clap_weights: str | os.PathLike | None = None,
    reduce: str = "mean",
    n_iter: int = 32,
    clap_audio_model: str = "HTSAT-base",
) -> tuple[MethodScores, AudioEmbedding]:
    """Score each genre by the embedding similarity of its training clips to each generation.

    `final_latents` [P, S, C, T] are the full adapter's final latents and
    `clip_features` [N, C, T] the training clips' standardised log-mels. Both are
    rendered with `mel_to_audio` (`n_iter` Griffin-Lim iterations) and embedded as
    `fit_audio_embedding` describes. Returns the scores [G, P] and the fitted space,
    which `metrics.retraining_effect` reuses for the ground truth.
    """
    final_latents = torch.as_tensor(final_latents, dtype=torch.float32)
    if final_latents.ndim != 4:
        raise ValueError(f"final_latents must be [prompts, seeds, C, T], got shape {list(final_latents.shape)}")
    start = time.perf_counter()
    clip_waveforms = render_latents(clip_features, audio, n_iter)
    space, clip_embeddings = fit_audio_embedding(clip_waveforms, audio, clap_weights, n_iter, clap_audio_model)
    generated = space.embed_latents(final_latents)
    matrix = similarity_matrix(generated, clip_embeddings, clip_genres, genres, reduce)
    seconds = time.perf_counter() - start
    logger.info("embedding similarity (%s): %d clips, %d generations in %.1f s",
                space.name, clip_embeddings.shape[0], generated.shape[0] * generated.shape[1], seconds)
    scores = MethodScores(
        method=METHOD_EMBEDDING_PREFIX + space.name,
        matrix=matrix,
        genres=tuple(genres),
        prompt_genres=tuple(prompt_genres),
        seconds=seconds,
        retrainings=0,
        details={"embedding": space.name, "reduce": reduce, "griffin_lim_iterations": n_iter,
                 "dimensions": int(clip_embeddings.shape[1])},
    )
    return scores, space


def _load_clap(weights: str | os.PathLike, audio_model: str):
    """Load LAION-CLAP with local safetensors weights, or return None when `laion_clap` is missing.

    NOTE: this path has not run here, because `laion_clap` is not installed in this
    environment. It follows laion_clap's `CLAP_Module.load_ckpt`, minus the pickle load.
    """
    path = Path(weights)
    reject_pickle_file(path, "CLAP weights")
    if not path.is_file():
        raise ConfigError(f"CLAP weights {path} not found; pass a local .safetensors file or no weights")
    try:
        import laion_clap
    except ImportError:
        logger.warning("laion_clap is not installed, so CLAP weights %s are ignored; using %s",
                       path, EMBEDDING_MFCC_CHROMA)
        return None
    from safetensors.torch import load_file

    try:
        # CLAP_Module reads the roberta-base tokenizer from the Hugging Face cache.
        module = laion_clap.CLAP_Module(enable_fusion=False, amodel=audio_model, device="cpu")
    except OSError as error:
        raise ConfigError(
            f"laion_clap could not build its model ({error}); it needs roberta-base in the local "
            "Hugging Face cache, or run without CLAP weights to use the mfcc-chroma embedding"
        ) from error
    state = {key.removeprefix("module."): value for key, value in load_file(str(path)).items()}
    state.pop("text_branch.embeddings.position_ids", None)  # a buffer that newer transformers drop
    try:
        module.model.load_state_dict(state)
    except RuntimeError as error:
        raise ArtifactError(
            f"CLAP weights {path} do not fit laion_clap's {audio_model} model ({error}); "
            "pass the audio model the checkpoint was trained with (HTSAT-base or HTSAT-tiny)"
        ) from error
    return module.eval()


def _clap_embeddings(model, waveforms: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa

    resampled = librosa.resample(waveforms, orig_sr=sample_rate, target_sr=CLAP_SAMPLE_RATE, axis=-1)
    batches = []
    with torch.no_grad():
        for start in range(0, resampled.shape[0], CLAP_BATCH):
            batch = resampled[start:start + CLAP_BATCH].astype(np.float32)
            batches.append(np.asarray(model.get_audio_embedding_from_data(x=batch, use_tensor=False)))
    return np.concatenate(batches).astype(float)
