"""LoRA attachment, adapter storage and the checks that guard adapter loading."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import peft
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.tiny_denoiser import (  # single_thread is an autouse fixture
    LATENT_SHAPE,
    TINY_AUDIO,
    TINY_LORA,
    TINY_MODEL,
    prompt_embeddings,
    randomise_lora_b,
    single_thread,
    tiny_model,
)
from wta_core.errors import ArtifactError, UnsafeFileError
from wta_core.lora import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, attach_lora, load_adapter, save_adapter
from wta_core.model import Denoiser, build_embedded_dit, count_parameters


def _outputs(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(21)
    latents = torch.randn(2, *LATENT_SHAPE, generator=generator)
    with torch.no_grad():
        return Denoiser(model)(latents, torch.tensor([700, 50]), prompt_embeddings(2))


def _lora_tensors(peft_model) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in peft_model.state_dict().items() if ".lora_" in name}


@pytest.fixture
def saved_adapter(tmp_path):
    """A tiny adapter with random B matrices, saved to tmp_path / "adapter"; returns (folder, sha256, outputs)."""
    peft_model = attach_lora(tiny_model(), TINY_LORA)
    randomise_lora_b(peft_model)
    digest = save_adapter(peft_model, tmp_path / "adapter")
    return tmp_path / "adapter", digest, _outputs(peft_model)


def test_attach_same_initial_weights():
    first = _lora_tensors(attach_lora(tiny_model(), TINY_LORA))
    second = _lora_tensors(attach_lora(tiny_model(), TINY_LORA))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_attach_init_seed_changes_a():
    first = _lora_tensors(attach_lora(tiny_model(), TINY_LORA))
    second = _lora_tensors(attach_lora(tiny_model(), dataclasses.replace(TINY_LORA, init_seed=99)))
    assert not all(torch.equal(first[name], second[name]) for name in first if ".lora_A." in name)


def test_attach_b_starts_at_zero():
    tensors = _lora_tensors(attach_lora(tiny_model(), TINY_LORA))
    assert all(torch.count_nonzero(tensor) == 0 for name, tensor in tensors.items() if ".lora_B." in name)


def test_attach_keeps_base_outputs():
    assert torch.equal(_outputs(attach_lora(tiny_model(), TINY_LORA)), _outputs(tiny_model()))


def test_attach_leaves_global_rng_alone():
    model = tiny_model()
    before = torch.get_rng_state()
    attach_lora(model, TINY_LORA)
    assert torch.equal(before, torch.get_rng_state())


def test_attach_targets_every_attention_projection():
    peft_model = attach_lora(tiny_model(), TINY_LORA)
    # 2 blocks x 2 attention layers x 4 projections, each with A and B.
    assert len(_lora_tensors(peft_model)) == 2 * 2 * 4 * 2
    assert count_parameters(peft_model, trainable_only=True) == sum(t.numel() for t in _lora_tensors(peft_model).values())


def test_attach_rejects_adapted_model():
    peft_model = attach_lora(tiny_model(), TINY_LORA)
    with pytest.raises(ValueError, match="without adapters"):
        attach_lora(peft_model.get_base_model(), TINY_LORA)


def test_save_writes_peft_files(saved_adapter):
    folder, _, _ = saved_adapter
    assert (folder / ADAPTER_CONFIG_NAME).is_file()
    assert (folder / ADAPTER_WEIGHTS_NAME).is_file()
    assert [path.name for path in folder.parent.iterdir()] == ["adapter"]


def test_save_returns_file_sha256(saved_adapter):
    folder, digest, _ = saved_adapter
    assert digest == hashlib.sha256((folder / ADAPTER_WEIGHTS_NAME).read_bytes()).hexdigest()


def test_peft_from_pretrained_reproduces_outputs(saved_adapter):
    folder, _, outputs = saved_adapter
    loaded = peft.PeftModel.from_pretrained(tiny_model(), str(folder))
    assert torch.equal(_outputs(loaded), outputs)


def test_load_adapter_reproduces_outputs(saved_adapter):
    folder, digest, outputs = saved_adapter
    loaded = load_adapter(tiny_model(), folder, expected_sha256=digest)
    assert torch.equal(_outputs(loaded), outputs)


def test_load_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_adapter(tiny_model(), tmp_path / "absent")


def test_load_missing_weights(saved_adapter):
    folder, _, _ = saved_adapter
    (folder / ADAPTER_WEIGHTS_NAME).unlink()
    with pytest.raises(ArtifactError, match=ADAPTER_WEIGHTS_NAME):
        load_adapter(tiny_model(), folder)


def test_load_missing_config(saved_adapter):
    folder, _, _ = saved_adapter
    (folder / ADAPTER_CONFIG_NAME).unlink()
    with pytest.raises(ArtifactError, match=ADAPTER_CONFIG_NAME):
        load_adapter(tiny_model(), folder)


def test_load_truncated_weights(saved_adapter):
    folder, _, _ = saved_adapter
    weights = folder / ADAPTER_WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        load_adapter(tiny_model(), folder)


def test_load_corrupt_header(saved_adapter):
    folder, _, _ = saved_adapter
    weights = folder / ADAPTER_WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        load_adapter(tiny_model(), folder)


def test_load_checksum_mismatch(saved_adapter):
    folder, _, _ = saved_adapter
    with pytest.raises(ArtifactError, match="sha256"):
        load_adapter(tiny_model(), folder, expected_sha256="0" * 64)


def test_load_missing_target_module(saved_adapter):
    folder, _, _ = saved_adapter
    config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    config["target_modules"] = ["to_q", "to_gate"]
    (folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="to_gate"):
        load_adapter(tiny_model(), folder)


def test_load_onto_wrong_base_shapes(saved_adapter):
    folder, _, _ = saved_adapter
    wider = build_embedded_dit(TINY_AUDIO, dataclasses.replace(TINY_MODEL, attention_head_dim=12))
    with pytest.raises(ArtifactError, match="shape"):
        load_adapter(wider, folder)


def test_load_onto_shallower_base(saved_adapter):
    folder, _, _ = saved_adapter
    shallow = build_embedded_dit(TINY_AUDIO, dataclasses.replace(TINY_MODEL, num_layers=1))
    with pytest.raises(ArtifactError, match="lacks"):
        load_adapter(shallow, folder)


def test_load_missing_tensor(saved_adapter):
    folder, _, _ = saved_adapter
    weights = folder / ADAPTER_WEIGHTS_NAME
    tensors = load_file(str(weights))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, str(weights))
    with pytest.raises(ArtifactError, match="lack"):
        load_adapter(tiny_model(), folder)


def test_load_not_lora_config(saved_adapter):
    folder, _, _ = saved_adapter
    (folder / ADAPTER_CONFIG_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        load_adapter(tiny_model(), folder)


def test_load_rejects_pickle_weights(saved_adapter):
    folder, _, _ = saved_adapter
    tensors = load_file(str(folder / ADAPTER_WEIGHTS_NAME))
    (folder / ADAPTER_WEIGHTS_NAME).unlink()
    torch.save(tensors, folder / "adapter_model.bin")
    with pytest.raises(UnsafeFileError, match="safetensors"):
        load_adapter(tiny_model(), folder)


def test_load_rejects_pickle_path(tmp_path):
    torch.save({}, tmp_path / "adapter.pt")
    with pytest.raises(UnsafeFileError, match="safetensors"):
        load_adapter(tiny_model(), tmp_path / "adapter.pt")


def test_load_rank_mismatch(saved_adapter):
    folder, _, _ = saved_adapter
    config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    config["r"] = 2 * config["r"]
    (folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        load_adapter(tiny_model(), folder)
