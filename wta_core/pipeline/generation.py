"""Trajectories: every adapter samples every genre prompt from the same seeds and noise."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from wta_core.config import RunConfig
from wta_core.data.prepare import load_clips
from wta_core.diffusion import Trajectory, sample_trajectory
from wta_core.errors import ArtifactError
from wta_core.lora import load_adapter
from wta_core.model import Denoiser
from wta_core.paths import WtaPaths
from wta_core.pipeline.adapters import adapter_record
from wta_core.pipeline.base import load_base, prompt_table
from wta_core.plots import genre_spectrograms
from wta_core.render import mel_to_audio, save_wav
from wta_core.storage import TableStore
from wta_core.subsets import materialise_hint

log = logging.getLogger(__name__)

TRAJECTORY_SCHEMA = {
    "adapter_id": pl.String, "genre": pl.String, "prompt": pl.String, "seed": pl.Int64,
    "steps": pl.Int64, "shape": pl.String, "dtype": pl.String, "path": pl.String,
}


@dataclass(frozen=True)
class StoredTrajectory:
    """One adapter's trajectories as loaded from disk, float32 on the CPU."""

    adapter_id: str
    latents: torch.Tensor  # [G, S, steps, C, T]
    predicted_clean: torch.Tensor  # [G, S, steps, C, T]
    initial_noise: torch.Tensor  # [S, C, T]
    timesteps: torch.Tensor  # [steps]
    genres: list[str]
    prompts: list[str]
    seeds: list[int]
    path: Path


def trajectory_path(paths: WtaPaths, adapter_id: str) -> Path:
    return paths.trajectory_dir / f"{adapter_id}.safetensors"


def load_denoiser(paths: WtaPaths, adapter_id: str, device: str = "cpu") -> Denoiser:
    """The base model with `adapter_id`'s adapter, its checksum verified against `adapters`."""
    record = adapter_record(paths, adapter_id)
    # The folder comes from the layout, not the stored path, so a moved or copied home works.
    try:
        model = load_adapter(load_base(paths), paths.adapter_dir(adapter_id), expected_sha256=record["sha256"])
    except ArtifactError as error:
        raise type(error)(
            f"{error}. To retrain it, materialise {materialise_hint(adapter_id)} again"
        ) from error
    return Denoiser(model.to(device).eval())


def generate_trajectories(paths: WtaPaths, config: RunConfig, dataset: str, adapter_id: str,
                          device: str = "cpu") -> StoredTrajectory:
    """Sample and store the trajectories of one adapter."""
    genres, prompts, embeddings = prompt_table(sorted(set(load_clips(paths).genres)), dataset)
    denoiser = load_denoiser(paths, adapter_id, device)
    latent_shape = (config.audio.n_mels, config.audio.clip_frames)
    with torch.no_grad():
        trajectory = sample_trajectory(
            denoiser, embeddings.to(device), list(config.sample.seeds), config.sample.steps,
            config.sample.guidance_scale, latent_shape, prompts=[prompts[g] for g in genres])
    return save_trajectory(paths, config, adapter_id, genres, trajectory)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write `tensors` and `metadata` to `path` in the safetensors format, with the header's keys sorted.

    safetensors 0.8.0 serialises the metadata from a hash map, so the key order, and with it
    the file's bytes, changes from call to call. Sorted keys make reruns byte-identical.
    """
    data = memoryview(save(tensors, metadata=metadata))
    length = int.from_bytes(data[:8], "little")
    header = json.loads(bytes(data[8 : 8 + length]))
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to a multiple of 8 bytes
    with open(path, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little"))
        handle.write(text)
        handle.write(data[8 + length :])


def save_trajectory(paths: WtaPaths, config: RunConfig, adapter_id: str, genres: list[str],
                    trajectory: Trajectory) -> StoredTrajectory:
    """Write one adapter's trajectories atomically and replace its rows in `trajectories`."""
    dtype = getattr(torch, config.sample.store_dtype)
    path = trajectory_path(paths, adapter_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "latents": trajectory.latents.to(dtype).contiguous(),
        "predicted_clean": trajectory.predicted_clean.to(dtype).contiguous(),
        "initial_noise": trajectory.initial_noise.to(torch.float32).contiguous(),
        "timesteps": trajectory.timesteps.to(torch.int64).contiguous(),
    }
    metadata = {"adapter_id": adapter_id, "genres": json.dumps(genres),
                "prompts": json.dumps(list(trajectory.prompts)), "seeds": json.dumps(list(trajectory.seeds)),
                "guidance_scale": str(trajectory.guidance_scale)}
    # Readers open only the final name, so a file cut short by a kill stays under the
    # temporary name, is never read, and is overwritten by the next run.
    temporary = path.with_suffix(".tmp")
    try:
        write_safetensors(temporary, tensors, metadata)
        temporary.replace(path)
    except (OSError, SafetensorError) as error:
        if temporary.is_file():
            temporary.unlink()
        raise ArtifactError(
            f"could not write the trajectories of {adapter_id!r} to {path} ({error}); the previous file, "
            f"if any, is unchanged. Free disk space or make {path.parent} writable, then materialise "
            f"trajectories for partition {adapter_id!r} again"
        ) from error

    steps = trajectory.steps
    shape = "x".join(str(n) for n in (steps, *trajectory.latents.shape[-2:]))
    rows = [{"adapter_id": adapter_id, "genre": genre, "prompt": prompt, "seed": int(seed), "steps": steps,
             "shape": shape, "dtype": config.sample.store_dtype, "path": str(path)}
            for genre, prompt in zip(genres, trajectory.prompts) for seed in trajectory.seeds]
    TableStore(paths.database).replace_rows(
        "trajectories", pl.DataFrame(rows, schema=TRAJECTORY_SCHEMA), {"adapter_id": adapter_id})
    return load_trajectory(paths, adapter_id)


def load_trajectory(paths: WtaPaths, adapter_id: str) -> StoredTrajectory:
    """Read one adapter's trajectories, or raise `ArtifactError` naming the partition to rerun."""
    path = trajectory_path(paths, adapter_id)
    if not path.exists():
        raise ArtifactError(f"no trajectories for adapter {adapter_id!r} at {path}; materialise "
                            f"{materialise_hint(adapter_id, 'trajectories')} first")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ArtifactError(f"trajectory file {path} is corrupt ({error}); materialise "
                            f"{materialise_hint(adapter_id, 'trajectories')} again") from error
    return StoredTrajectory(
        adapter_id=adapter_id,
        latents=tensors["latents"].to(torch.float32),
        predicted_clean=tensors["predicted_clean"].to(torch.float32),
        initial_noise=tensors["initial_noise"],
        timesteps=tensors["timesteps"],
        genres=json.loads(metadata["genres"]),
        prompts=json.loads(metadata["prompts"]),
        seeds=json.loads(metadata["seeds"]),
        path=path,
    )


def check_comparable(reference: StoredTrajectory, other: StoredTrajectory) -> None:
    """Raise `ArtifactError` unless both were sampled with the same prompts, seeds, steps and noise."""
    problems = []
    if reference.prompts != other.prompts:
        problems.append(f"prompts differ ({reference.prompts} against {other.prompts})")
    if reference.seeds != other.seeds:
        problems.append(f"seeds differ ({reference.seeds} against {other.seeds})")
    if not torch.equal(reference.timesteps, other.timesteps):
        problems.append(f"timesteps differ ({reference.timesteps.numel()} against {other.timesteps.numel()} steps)")
    if reference.latents.shape != other.latents.shape:
        problems.append(f"shapes differ ({list(reference.latents.shape)} against {list(other.latents.shape)})")
    elif not torch.equal(reference.initial_noise, other.initial_noise):
        problems.append("initial noise differs")
    if problems:
        raise ArtifactError(
            f"trajectories of {other.adapter_id!r} and {reference.adapter_id!r} are not comparable: "
            + "; ".join(problems) + ". Materialise trajectories of both partitions again with one preset."
        )


def render_final_states(paths: WtaPaths, config: RunConfig, stored: StoredTrajectory) -> dict[str, Path]:
    """Griffin-Lim audio and a spectrogram figure of each prompt's first-seed final state."""
    folder = paths.audio_dir / stored.adapter_id
    outputs: dict[str, Path] = {}
    finals = {}
    for index, genre in enumerate(stored.genres):
        final = stored.latents[index, 0, -1]
        finals[genre] = final.numpy()
        audio = mel_to_audio(final, config.audio)
        outputs[genre] = save_wav(folder / f"{genre}.seed{stored.seeds[0]}.wav", audio, config.audio.sample_rate)
    outputs["spectrograms"] = genre_spectrograms(
        {genre: np.asarray(value) for genre, value in finals.items()}, folder / "final_states.png",
        title=f"final states of {stored.adapter_id}, seed {stored.seeds[0]} (mel bins by frames)")
    return outputs
