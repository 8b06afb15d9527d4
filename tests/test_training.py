"""Controlled, resumable LoRA training and base-model pretraining on a tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_denoiser import (  # single_thread is an autouse fixture
    LATENT_SHAPE,
    TINY_LORA,
    single_thread,
    tiny_dataset,
    tiny_model,
)
from wta_core.config import BaseTrainConfig
from wta_core.errors import ConfigError, DatasetError
from wta_core.lora import ADAPTER_WEIGHTS_NAME
from wta_core.model import save_base_model
from wta_core.training import (
    ExampleStream,
    corrupt_clips,
    draw_example,
    train_base,
    train_lora,
)

CLIPS, EMBEDDINGS = tiny_dataset(clips=12)
SUBSET = torch.arange(12) >= 4  # clips 4..11


class Interrupt(Exception):
    pass


def _stop_after(step_to_fail: int):
    def progress(step, loss, steps_per_second):
        if step == step_to_fail:
            raise Interrupt(f"stopped at step {step}")

    return progress


def _train(tmp_path, name: str, **overrides):
    arguments = dict(
        base=tiny_model,
        clips=CLIPS,
        prompt_embeddings=EMBEDDINGS,
        member_mask=SUBSET,
        lora=TINY_LORA,
        seed=0,
        out_folder=tmp_path / "adapters" / name,
        checkpoint_folder=tmp_path / "checkpoints" / name,
    )
    arguments.update(overrides)
    return train_lora(**arguments)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted subset adapter with seed 0: (TrainResult, weights)."""
    tmp_path = tmp_path_factory.mktemp("reference")
    result = _train(tmp_path, "reference")
    return result, load_file(str(tmp_path / "adapters" / "reference" / ADAPTER_WEIGHTS_NAME))


def _weights(result) -> dict[str, torch.Tensor]:
    return load_file(f"{result.adapter_folder}/{ADAPTER_WEIGHTS_NAME}")


def _same_tensors(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_result_fields(reference):
    result, _ = reference
    assert result.steps == TINY_LORA.steps
    assert len(result.losses) == TINY_LORA.steps
    assert result.members == 8
    assert result.device == "cpu"
    assert result.resumed_from_step == 0


def test_training_changes_weights(reference):
    _, weights = reference
    assert any(torch.count_nonzero(tensor) > 0 for name, tensor in weights.items() if ".lora_B." in name)


def test_same_seed_identical_weights(tmp_path, reference):
    result, weights = reference
    again = _train(tmp_path, "again")
    assert again.sha256 == result.sha256
    assert _same_tensors(_weights(again), weights)
    assert again.losses == result.losses


def test_other_seed_other_weights(tmp_path, reference):
    result, _ = reference
    assert _train(tmp_path, "seed1", seed=1).sha256 != result.sha256


def test_base_folder_same_as_factory(tmp_path, reference):
    result, _ = reference
    save_base_model(tiny_model(), tmp_path / "base")
    assert _train(tmp_path, "from-folder", base=tmp_path / "base").sha256 == result.sha256


def test_resume_identical_weights(tmp_path, reference):
    result, weights = reference
    with pytest.raises(Interrupt):
        _train(tmp_path, "resumed", progress=_stop_after(3))
    resumed = _train(tmp_path, "resumed")
    assert resumed.resumed_from_step == 2
    assert _same_tensors(_weights(resumed), weights)
    assert resumed.losses == result.losses


def test_interrupted_run_leaves_no_adapter(tmp_path):
    with pytest.raises(Interrupt):
        _train(tmp_path, "partial", progress=_stop_after(5))
    assert not (tmp_path / "adapters" / "partial").exists()
    assert [path.name for path in (tmp_path / "checkpoints" / "partial").iterdir()] == [
        "checkpoint-00000004.safetensors"
    ]


def test_checkpoints_deleted_after_success(tmp_path):
    with pytest.raises(Interrupt):
        _train(tmp_path, "cleanup", progress=_stop_after(3))
    _train(tmp_path, "cleanup")
    assert list((tmp_path / "checkpoints" / "cleanup").iterdir()) == []


def test_stale_checkpoint_ignored(tmp_path, reference):
    result, _ = reference
    with pytest.raises(Interrupt):
        _train(tmp_path, "stale", seed=1, progress=_stop_after(3))
    fresh = _train(tmp_path, "stale")
    assert fresh.resumed_from_step == 0
    assert fresh.sha256 == result.sha256


def test_corrupt_checkpoint_ignored(tmp_path, reference):
    result, _ = reference
    with pytest.raises(Interrupt):
        _train(tmp_path, "corrupt", progress=_stop_after(3))
    checkpoint = tmp_path / "checkpoints" / "corrupt" / "checkpoint-00000002.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:50])
    fresh = _train(tmp_path, "corrupt")
    assert fresh.resumed_from_step == 0
    assert fresh.sha256 == result.sha256


def test_progress_called_every_step(tmp_path):
    calls = []
    _train(tmp_path, "progress", progress=lambda step, loss, rate: calls.append((step, loss, rate)))
    assert [step for step, _, _ in calls] == list(range(1, TINY_LORA.steps + 1))
    assert all(rate > 0 for _, _, rate in calls)


def test_training_leaves_global_state_alone(tmp_path):
    rng_before = torch.get_rng_state()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    threads_before = torch.get_num_threads()
    _train(tmp_path, "state", lora=dataclasses.replace(TINY_LORA, steps=1), num_threads=2)
    assert torch.equal(rng_before, torch.get_rng_state())
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before
    assert torch.get_num_threads() == threads_before


def test_noise_corrupt_changes_weights(tmp_path, reference):
    result, _ = reference
    corrupt = torch.arange(12) % 2 == 0
    assert _train(tmp_path, "noisy", noise_corrupt=corrupt).sha256 != result.sha256


def test_empty_subset_rejected(tmp_path):
    with pytest.raises(DatasetError, match="no clips"):
        _train(tmp_path, "empty", member_mask=torch.zeros(12, dtype=torch.bool))


def test_mask_length_checked(tmp_path):
    with pytest.raises(ValueError, match="member_mask"):
        _train(tmp_path, "short", member_mask=torch.ones(5, dtype=torch.bool))


def test_unknown_device_rejected(tmp_path):
    with pytest.raises(ConfigError, match="device"):
        _train(tmp_path, "device", device="xla")


def test_stream_subset_follows_full_order():
    full = ExampleStream(torch.ones(12, dtype=torch.bool), seed=3).next_batch(36)
    subset = ExampleStream(SUBSET, seed=3).next_batch(24)
    assert subset == [(clip, epoch) for clip, epoch in full if SUBSET[clip]]


def test_stream_epochs_are_permutations():
    batch = ExampleStream(torch.ones(12, dtype=torch.bool), seed=3).next_batch(24)
    assert sorted(clip for clip, epoch in batch if epoch == 0) == list(range(12))
    assert sorted(clip for clip, epoch in batch if epoch == 1) == list(range(12))


def test_stream_resumes_from_position():
    stream = ExampleStream(SUBSET, seed=3)
    stream.next_batch(5)
    rest = ExampleStream(SUBSET, seed=3, epoch=stream.epoch, index=stream.index).next_batch(7)
    assert rest == ExampleStream(SUBSET, seed=3).next_batch(12)[5:]


def test_example_draw_depends_on_clip_and_epoch():
    timestep, dropped, noise = draw_example(0, clip=5, epoch=2, latent_shape=LATENT_SHAPE)
    again = draw_example(0, clip=5, epoch=2, latent_shape=LATENT_SHAPE)
    assert (timestep, dropped) == again[:2]
    assert torch.equal(noise, again[2])
    assert not torch.equal(noise, draw_example(0, clip=5, epoch=3, latent_shape=LATENT_SHAPE)[2])
    assert not torch.equal(noise, draw_example(0, clip=6, epoch=2, latent_shape=LATENT_SHAPE)[2])


def test_corrupt_clips_selected_only():
    mask = torch.zeros(12, dtype=torch.bool)
    mask[3] = True
    corrupted = corrupt_clips(CLIPS, mask, snr_db=0.0, seed=0)
    assert torch.equal(corrupted[~mask], CLIPS[~mask])
    assert not torch.equal(corrupted[3], CLIPS[3])
    assert abs(float(corrupted[3].mean())) < 1e-5
    assert abs(float(corrupted[3].std()) - 1.0) < 1e-5


def test_train_base_deterministic():
    config = BaseTrainConfig(steps=3, batch_size=4, learning_rate=1e-3, seed=0)
    first, second = tiny_model(), tiny_model()
    record = train_base(first, CLIPS, EMBEDDINGS, config)
    train_base(second, CLIPS, EMBEDDINGS, config)
    assert len(record["losses"]) == 3
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_train_base_lowers_loss():
    config = BaseTrainConfig(steps=30, batch_size=8, learning_rate=3e-3, seed=0)
    losses = train_base(tiny_model(), CLIPS[:4], EMBEDDINGS[:4], config)["losses"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_train_base_calls_log():
    steps = []
    train_base(tiny_model(), CLIPS, EMBEDDINGS, dataclasses.replace(BaseTrainConfig(), steps=2, batch_size=2),
               log=lambda step, loss, rate: steps.append(step))
    assert steps == [1, 2]
