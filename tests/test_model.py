"""Embedded StableAudioDiTModel, its conditioning wrapper, storage and the Stable Audio pipeline path."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tests.tiny_denoiser import (  # single_thread is an autouse fixture
    LATENT_SHAPE,
    TEXT_DIM,
    TINY_AUDIO,
    TINY_MODEL,
    prompt_embeddings,
    single_thread,
    tiny_model,
)
from wta_core.config import AudioConfig, ModelConfig
from wta_core.errors import ArtifactError, ConfigError, UnsafeFileError
from wta_core.model import (
    BASE_WEIGHTS_NAME,
    Denoiser,
    atomic_folder,
    build_embedded_dit,
    build_tiny_stable_audio_pipeline,
    count_parameters,
    load_base_model,
    load_stable_audio_pipeline,
    rotary_embedding,
    save_base_model,
)


def _inputs(batch: int = 3):
    generator = torch.Generator().manual_seed(11)
    latents = torch.randn(batch, *LATENT_SHAPE, generator=generator)
    timesteps = torch.tensor([999, 500, 0][:batch])
    return latents, timesteps, prompt_embeddings(batch)


def _outputs(model) -> torch.Tensor:
    with torch.no_grad():
        return Denoiser(model)(*_inputs())


def test_build_same_seed_same_weights():
    first, second = tiny_model(seed=3).state_dict(), tiny_model(seed=3).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_build_other_seed_other_weights():
    first, second = tiny_model(seed=3).state_dict(), tiny_model(seed=4).state_dict()
    assert not all(torch.equal(first[name], second[name]) for name in first)


def test_build_leaves_global_rng_alone():
    before = torch.get_rng_state()
    tiny_model()
    assert torch.equal(before, torch.get_rng_state())


def test_build_default_size():
    model = build_embedded_dit(AudioConfig(), ModelConfig())
    assert 1_200_000 < count_parameters(model) < 1_700_000
    assert model.config.in_channels == 64
    assert model.config.sample_size == 64


def test_build_rejects_stable_audio_kind():
    with pytest.raises(ConfigError, match="embedded"):
        build_embedded_dit(TINY_AUDIO, dataclasses.replace(TINY_MODEL, kind="stable-audio"))


def test_build_rejects_odd_rotary_width():
    with pytest.raises(ConfigError, match="multiple of 4"):
        build_embedded_dit(TINY_AUDIO, dataclasses.replace(TINY_MODEL, attention_head_dim=6))


def test_rotary_embedding_shape():
    cos, sin = rotary_embedding(attention_head_dim=8, length=17)
    assert cos.shape == (17, 4)
    assert sin.shape == (17, 4)
    assert torch.equal(cos[0], torch.ones(4))


def test_denoiser_output_shape():
    output = _outputs(tiny_model())
    assert output.shape == (3, *LATENT_SHAPE)
    assert torch.isfinite(output).all()


def test_denoiser_uses_prompt():
    model = tiny_model()
    latents, timesteps, embeddings = _inputs()
    with torch.no_grad():
        conditioned = Denoiser(model)(latents, timesteps, embeddings)
        unconditioned = Denoiser(model)(latents, timesteps, torch.zeros_like(embeddings))
    assert not torch.allclose(conditioned, unconditioned)


def test_denoiser_uses_timestep():
    model = tiny_model()
    latents, _, embeddings = _inputs()
    with torch.no_grad():
        early = Denoiser(model)(latents, torch.full((3,), 900), embeddings)
        late = Denoiser(model)(latents, torch.full((3,), 10), embeddings)
    assert not torch.allclose(early, late)


def test_denoiser_rejects_wrong_embedding_width():
    latents, timesteps, _ = _inputs()
    with pytest.raises(ValueError, match="prompt_embeddings"):
        Denoiser(tiny_model())(latents, timesteps, torch.zeros(3, TEXT_DIM + 1))


def test_save_load_same_outputs(tmp_path):
    model = tiny_model()
    save_base_model(model, tmp_path / "base")
    loaded = load_base_model(tmp_path / "base")
    assert torch.equal(_outputs(model), _outputs(loaded))


def test_save_writes_safetensors_and_config(tmp_path):
    save_base_model(tiny_model(), tmp_path / "base")
    assert sorted(path.name for path in (tmp_path / "base").iterdir()) == ["config.json", BASE_WEIGHTS_NAME]
    assert [path.name for path in tmp_path.iterdir()] == ["base"]


def test_save_replaces_existing_folder(tmp_path):
    save_base_model(tiny_model(seed=1), tmp_path / "base")
    save_base_model(tiny_model(seed=2), tmp_path / "base")
    assert torch.equal(_outputs(load_base_model(tmp_path / "base")), _outputs(tiny_model(seed=2)))


def test_load_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_base_model(tmp_path / "absent")


def test_load_rejects_pickle_folder(tmp_path):
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(tiny_model().config)))
    torch.save(tiny_model().state_dict(), folder / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeFileError, match="safetensors"):
        load_base_model(folder)


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "model.pth", "model.bin"])
def test_load_rejects_pickle_path(tmp_path, name):
    torch.save({}, tmp_path / name)
    with pytest.raises(UnsafeFileError, match="safetensors"):
        load_base_model(tmp_path / name)


def test_load_truncated_weights(tmp_path):
    save_base_model(tiny_model(), tmp_path / "base")
    weights = tmp_path / "base" / BASE_WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        load_base_model(tmp_path / "base")


def test_atomic_folder_keeps_old_on_error(tmp_path):
    final = tmp_path / "artifact"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(final) as temporary:
            (temporary / "new.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert (final / "old.txt").read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["artifact"]


def _run_pipeline(pipeline) -> torch.Tensor:
    return pipeline(
        prompt=["slow blues", "fast reel"],
        num_inference_steps=2,
        audio_end_in_s=4.0,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).audios


def test_tiny_stable_audio_pipeline_runs():
    audio = _run_pipeline(build_tiny_stable_audio_pipeline(seed=0))
    assert audio.shape == (2, 2, 64)  # prompts, stereo, 4 s at 16 Hz
    assert torch.isfinite(audio).all()


def test_stable_audio_loader_reads_local_folder(tmp_path):
    pipeline = build_tiny_stable_audio_pipeline(seed=0)
    pipeline.save_pretrained(tmp_path / "stable-audio")
    loaded = load_stable_audio_pipeline(tmp_path / "stable-audio", device="cpu")
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(_run_pipeline(loaded), _run_pipeline(pipeline))


def test_stable_audio_loader_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match="model_index.json"):
        load_stable_audio_pipeline(tmp_path, device="cpu")
