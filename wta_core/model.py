"""The denoiser: diffusers' `StableAudioDiTModel`, its conditioning, storage and Stable Audio loaders.

The embedded model is a small `StableAudioDiTModel` (the transformer class of Stable
Audio Open) whose 1-D latent is the standardised log-mel clip itself: `n_mels`
channels by `clip_frames` frames, no autoencoder. A prompt embedding conditions it
twice, as a one-token cross-attention sequence and as the global token that the
model prepends to the latent sequence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from wta_core.config import AudioConfig, ModelConfig
from wta_core.errors import ArtifactError, ConfigError, UnsafeFileError

logger = logging.getLogger(__name__)

# Training timesteps of the noise schedule. The denoiser passes t / NUM_TRAIN_TIMESTEPS,
# a noise level in [0, 1), to the transformer. Stable Audio Open's scheduler
# (CosineDPMSolverMultistepScheduler, atan(sigma) * 2 / pi) passes values in that
# range too. Raw step numbers up to 999 would alias the Gaussian Fourier time embedding.
NUM_TRAIN_TIMESTEPS = 1000

# File suffixes of pickle-based weights, which can run code when loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

BASE_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # diffusers' file name
BASE_CONFIG_NAME = "config.json"


def build_embedded_dit(
    audio: AudioConfig, model: ModelConfig, text_dim: int = 384, seed: int = 0
):
    """Build the embedded `StableAudioDiTModel` with weights drawn from `seed`.

    The latent is `audio.n_mels` channels by `audio.clip_frames` frames, and both
    conditioning inputs take `text_dim`-wide prompt embeddings. The global RNG state
    is restored afterwards, so building a model does not change later random draws.
    """
    from diffusers import StableAudioDiTModel

    if model.kind != "embedded":
        raise ConfigError(
            f"build_embedded_dit needs model.kind='embedded', got {model.kind!r}; "
            "load a Stable Audio Open checkpoint with load_stable_audio_pipeline instead"
        )
    # The rotary embedding covers attention_head_dim // 2 channels, and
    # get_1d_rotary_pos_embed needs an even width.
    if model.attention_head_dim % 4 != 0:
        raise ConfigError(
            f"model.attention_head_dim must be a multiple of 4 for the rotary embedding, "
            f"got {model.attention_head_dim}"
        )
    if model.num_attention_heads % model.num_key_value_attention_heads != 0:
        raise ConfigError(
            f"model.num_attention_heads ({model.num_attention_heads}) must be a multiple of "
            f"model.num_key_value_attention_heads ({model.num_key_value_attention_heads})"
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dit = StableAudioDiTModel(
            sample_size=audio.clip_frames,
            in_channels=audio.n_mels,
            num_layers=model.num_layers,
            attention_head_dim=model.attention_head_dim,
            num_attention_heads=model.num_attention_heads,
            num_key_value_attention_heads=model.num_key_value_attention_heads,
            out_channels=audio.n_mels,
            cross_attention_dim=model.cross_attention_dim,
            time_proj_dim=model.time_proj_dim,
            global_states_input_dim=text_dim,
            cross_attention_input_dim=text_dim,
        )
    return dit.eval()


def dit_config(model: nn.Module):
    """Return the `StableAudioDiTModel` config of `model`, which may be wrapped in a `PeftModel`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not hasattr(config, "attention_head_dim"):
        raise TypeError(f"expected a StableAudioDiTModel or a PeftModel around one, got {type(base).__name__}")
    return config


def rotary_embedding(attention_head_dim: int, length: int, device: torch.device | str = "cpu"):
    """Return the (cos, sin) rotary tables [length, attention_head_dim // 2] that StableAudioPipeline uses.

    `length` counts the latent frames plus the one global token that the model
    prepends to them.
    """
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    cos, sin = get_1d_rotary_pos_embed(
        attention_head_dim // 2,
        length,
        use_real=True,
        repeat_interleave_real=False,
    )
    return cos.to(device), sin.to(device)


class Denoiser(nn.Module):
    """Conditioning wrapper that maps (latents, timesteps, prompt embeddings) to the model output.

    `model` is a `StableAudioDiTModel`, or a `PeftModel` around one. `forward` takes
    latents [B, C, T], scheduler timesteps [B] in [0, NUM_TRAIN_TIMESTEPS) and prompt
    embeddings [B, D], and returns the prediction [B, C, T] in the training objective
    of `wta_core.diffusion` (v-prediction).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        config = dit_config(model)
        self.in_channels = int(config.in_channels)
        self.attention_head_dim = int(config.attention_head_dim)
        self.text_dim = int(config.cross_attention_input_dim)
        self._rotary_cache: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _rotary(self, length: int, device: torch.device):
        key = (length, str(device))
        if key not in self._rotary_cache:
            self._rotary_cache[key] = rotary_embedding(self.attention_head_dim, length, device)
        return self._rotary_cache[key]

    def forward(
        self, latents: torch.Tensor, timesteps: torch.Tensor, prompt_embeddings: torch.Tensor
    ) -> torch.Tensor:
        batch, channels, frames = latents.shape
        if channels != self.in_channels:
            raise ValueError(f"latents have {channels} channels, the model expects {self.in_channels}")
        if prompt_embeddings.shape != (batch, self.text_dim):
            raise ValueError(
                f"prompt_embeddings must have shape [{batch}, {self.text_dim}], got {list(prompt_embeddings.shape)}"
            )
        timesteps = timesteps.reshape(-1).expand(batch) if timesteps.numel() == 1 else timesteps
        if timesteps.shape != (batch,):
            raise ValueError(f"timesteps must have shape [{batch}], got {list(timesteps.shape)}")

        noise_level = timesteps.to(device=latents.device, dtype=torch.float32) / NUM_TRAIN_TIMESTEPS
        condition = prompt_embeddings.to(device=latents.device, dtype=latents.dtype).unsqueeze(1)  # [B, 1, D]
        return self.model(
            hidden_states=latents,
            timestep=noise_level,
            encoder_hidden_states=condition,
            global_hidden_states=condition,
            rotary_embedding=self._rotary(frames + 1, latents.device),
            return_dict=False,
        )[0]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `final` only if the block succeeds.

    The temporary folder sits next to `final`, so the closing rename stays on one file
    system. An existing `final` is moved aside first and deleted after the swap, so
    readers see the old folder, briefly no folder, or the new one, never a partial
    one. On an exception the temporary folder is deleted and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    temporary = final.parent / f".{final.name}.tmp-{token}"
    temporary.mkdir()
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise

    retired = final.parent / f".{final.name}.old-{token}"
    if final.exists():
        os.replace(final, retired)
    os.replace(temporary, final)
    shutil.rmtree(retired, ignore_errors=True)


def reject_pickle_file(path: Path, description: str) -> None:
    """Raise `UnsafeFileError` if `path` has a pickle weights suffix."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeFileError(
            f"{description} {path} is a pickle file ({path.suffix}), which can run code when loaded; "
            "convert it to safetensors (safetensors.torch.save_file(torch.load(path), 'model.safetensors') "
            "in a trusted environment) and load that instead"
        )


def save_base_model(model: nn.Module, folder: str | os.PathLike) -> Path:
    """Write `model` to `folder` as diffusers' config.json + safetensors, replacing it atomically."""
    folder = Path(folder)
    with atomic_folder(folder) as temporary:
        model.save_pretrained(temporary, safe_serialization=True)
    logger.info("saved base model to %s", folder)
    return folder


def load_base_model(folder: str | os.PathLike):
    """Load a `StableAudioDiTModel` written by `save_base_model`, in eval mode on the CPU.

    Raises `UnsafeFileError` for pickle weights and `ArtifactError` for a missing,
    truncated or mismatched folder.
    """
    from diffusers import StableAudioDiTModel

    folder = Path(folder)
    reject_pickle_file(folder, "base model path")
    if folder.is_file():
        raise ArtifactError(f"base model path {folder} is a file; pass the folder that save_base_model wrote")
    if not folder.is_dir():
        raise ArtifactError(f"base model folder {folder} not found; train the base model first")

    weights = folder / BASE_WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            reject_pickle_file(pickles[0], "base model weights")
        raise ArtifactError(f"base model folder {folder} has no {BASE_WEIGHTS_NAME}; retrain the base model")
    if not (folder / BASE_CONFIG_NAME).is_file():
        raise ArtifactError(f"base model folder {folder} has no {BASE_CONFIG_NAME}; retrain the base model")

    try:
        json.loads((folder / BASE_CONFIG_NAME).read_text(encoding="utf-8"))
        model = StableAudioDiTModel.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
        raise ArtifactError(
            f"base model in {folder} cannot be loaded ({type(error).__name__}: {error}); "
            "the files are corrupt or do not match; delete the folder and retrain the base model"
        ) from error
    copy_into_fresh_memory(model)
    return model.eval()


def copy_into_fresh_memory(module: nn.Module) -> None:
    """Replace every parameter and buffer of `module` by a copy in a new allocation.

    diffusers reads safetensors through a memory map, so loaded CPU tensors can sit
    at addresses that are not 64-byte aligned. PyTorch's CPU matmul kernels then round
    differently (last-bit differences, seen with torch 2.14 on x86), and a model
    loaded from disk would not reproduce the outputs of the model that was saved.
    """
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.data = parameter.data.clone()
        for submodule in module.modules():
            for name, buffer in list(submodule.named_buffers(recurse=False)):
                if buffer is not None:
                    submodule._buffers[name] = buffer.clone()


def load_stable_audio_pipeline(
    folder: str | os.PathLike, device: str = "cuda", torch_dtype: torch.dtype | None = None
):
    """Load a Stable Audio Open pipeline from a local diffusers folder, never from the network.

    `folder` is a local copy of the diffusers layout of Stable Audio Open
    (model_index.json plus one subfolder per component). Only safetensors weights are
    read, because diffusers and transformers get `use_safetensors=True`.
    """
    from diffusers import StableAudioPipeline

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ArtifactError(
            f"{folder} is not a local diffusers pipeline folder (model_index.json missing); "
            "download Stable Audio Open in the diffusers layout on a machine with network access "
            "and set model.checkpoint_path to that folder"
        )
    weighted = ("transformer", "vae", "text_encoder", "projection_model")
    for name in weighted:
        component = folder / name
        if component.is_dir() and not any(component.glob("*.safetensors")):
            pickles = sorted(p for p in component.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
            if pickles:
                reject_pickle_file(pickles[0], f"Stable Audio {name} weights")

    try:
        pipeline = StableAudioPipeline.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, torch_dtype=torch_dtype
        )
    except (OSError, ValueError) as error:
        raise ArtifactError(
            f"Stable Audio pipeline in {folder} cannot be loaded ({type(error).__name__}: {error}); "
            "check that every component folder holds its config and safetensors weights"
        ) from error
    if torch.device(device).type == "cpu":
        for name in weighted:
            copy_into_fresh_memory(getattr(pipeline, name))
    return pipeline.to(device)


def _character_t5_tokenizer(max_length: int):
    """Build a character-level T5 tokenizer in memory, so the tiny pipeline needs no download."""
    from transformers import T5Tokenizer

    # transformers 5 builds T5Tokenizer from a (piece, log-probability) list as a
    # Unigram model. "\u2581" is SentencePiece's word-boundary marker.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(character, -2.0) for character in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def build_tiny_stable_audio_pipeline(seed: int = 0):
    """Assemble a randomly initialised, tiny `StableAudioPipeline` on the CPU.

    It has the classes of Stable Audio Open (StableAudioDiTModel, AutoencoderOobleck,
    T5EncoderModel, StableAudioProjectionModel) at toy sizes, so the Stable Audio code
    path runs in a second without a checkpoint. The scheduler is
    `EDMDPMSolverMultistepScheduler` in deterministic dpmsolver++ mode. Stable Audio
    Open ships `CosineDPMSolverMultistepScheduler`, whose SDE mode needs torchsde.
    The VAE decodes 16 latent frames into 4 s of stereo audio at 16 Hz.
    """
    from diffusers import AutoencoderOobleck, EDMDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    latent_channels = 4
    conditioning_dim = 8
    tokenizer = _character_t5_tokenizer(max_length=32)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                d_model=16,
                d_kv=8,
                d_ff=32,
                num_layers=1,
                num_heads=2,
                relative_attention_num_buckets=8,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
        projection_model = StableAudioProjectionModel(
            text_encoder_dim=16, conditioning_dim=conditioning_dim, min_value=0, max_value=32
        )
        transformer = StableAudioDiTModel(
            sample_size=16,
            in_channels=latent_channels,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            num_key_value_attention_heads=1,
            out_channels=latent_channels,
            cross_attention_dim=8,
            time_proj_dim=8,
            global_states_input_dim=2 * conditioning_dim,  # start and end seconds, concatenated
            cross_attention_input_dim=conditioning_dim,
        )
        vae = AutoencoderOobleck(
            encoder_hidden_size=8,
            downsampling_ratios=[2, 2],
            channel_multiples=[1, 2],
            decoder_channels=8,
            decoder_input_channels=latent_channels,
            audio_channels=2,
            sampling_rate=16,
        )
    scheduler = EDMDPMSolverMultistepScheduler(
        algorithm_type="dpmsolver++", solver_order=2, prediction_type="v_prediction", sigma_data=1.0
    )
    pipeline = StableAudioPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        projection_model=projection_model.eval(),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
        scheduler=scheduler,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
