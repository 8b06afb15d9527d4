"""Tiny model, LoRA and dataset settings shared by the model, LoRA, training and sampling tests."""

from __future__ import annotations

import pytest
import torch

from wta_core.config import AudioConfig, LoraConfig, ModelConfig
from wta_core.model import build_embedded_dit

TINY_AUDIO = AudioConfig(n_mels=16, clip_frames=16)
TINY_MODEL = ModelConfig(
    num_layers=2,
    num_attention_heads=2,
    num_key_value_attention_heads=1,
    attention_head_dim=8,
    cross_attention_dim=16,
    time_proj_dim=16,
)
TINY_LORA = LoraConfig(rank=4, alpha=4, steps=6, batch_size=4, checkpoint_every=2)
LATENT_SHAPE = (TINY_AUDIO.n_mels, TINY_AUDIO.clip_frames)
TEXT_DIM = 384


def tiny_model(seed: int = 0):
    return build_embedded_dit(TINY_AUDIO, TINY_MODEL, seed=seed)


def tiny_dataset(clips: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random standardised clips [N, 16, 16] and unit-length prompt embeddings [N, 384]."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn(clips, *LATENT_SHAPE, generator=generator)
    data = (data - data.mean(dim=(1, 2), keepdim=True)) / data.std(dim=(1, 2), keepdim=True)
    embeddings = torch.nn.functional.normalize(torch.randn(clips, TEXT_DIM, generator=generator), dim=1)
    return data, embeddings


def prompt_embeddings(count: int, seed: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, TEXT_DIM, generator=generator), dim=1)


def randomise_lora_b(peft_model, seed: int = 7) -> None:
    """Give every LoRA B matrix random values, so the adapter changes the model output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(peft_model.named_parameters()):
            if ".lora_B." in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run each module with one torch thread, restoring the previous count afterwards.

    On a shared two-core machine, two torch threads that compete with other processes
    made a tiny training step about 30 times slower than one thread.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
