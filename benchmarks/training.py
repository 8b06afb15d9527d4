"""LoRA training throughput through the lora_adapters asset against a bare peft loop.

Both train the demo preset's model (64 x 64 latent, LoRA rank 8) with the same batch size
and step count, on the same synthetic clips, in this process and with the same torch
thread count. The asset run goes through Dagster (in process, and through the Pipes
subprocess launcher), including dataset loading, checkpoints and the DuckDB writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
import polars as pl
import torch
from safetensors.torch import save_file

from wta_core.config import PRESETS, RunConfig, get_preset
from wta_core.diffusion import noisy_sample_and_target, training_scheduler
from wta_core.lora import attach_lora
from wta_core.model import Denoiser, build_embedded_dit, save_base_model
from wta_core.paths import WtaPaths
from wta_core.storage import TableStore
from wta_core.training import train_lora

THREADS = 1  # the training resource's default
TARGET_OVERHEAD = 0.05
# Embedded style names, so the partitions computed when wta_dagster loads contain them.
GENRES = ("chorale", "fiddle", "mass", "quartet")
BENCH_PRESET = "bench-training"


def _config(steps: int) -> RunConfig:
    demo = get_preset("demo")
    return dataclasses.replace(demo, name=BENCH_PRESET,
                               lora=dataclasses.replace(demo.lora, steps=steps, checkpoint_every=max(1, steps // 2)))


def _make_home(home: Path, config: RunConfig, clips_per_genre: int) -> WtaPaths:
    """Build a home with synthetic clips and an untrained base model, enough for the adapter asset."""
    paths = WtaPaths(home)
    paths.dataset_dir.mkdir(parents=True, exist_ok=True)
    count = clips_per_genre * len(GENRES)
    features = torch.randn(count, config.audio.n_mels, config.audio.clip_frames,
                           generator=torch.Generator().manual_seed(0))
    ids = [f"{GENRES[i // clips_per_genre]}.{i:05d}" for i in range(count)]
    save_file({"features": features.contiguous()}, str(paths.dataset_dir / "features.safetensors"),
              metadata={"track_ids": json.dumps(ids)})
    rows = [{"track_id": track, "genre": track.split(".")[0], "status": "ok", "feature_index": index}
            for index, track in enumerate(ids)]
    TableStore(paths.database).replace_rows("tracks", pl.DataFrame(rows))
    save_base_model(build_embedded_dit(config.audio, config.model, seed=0), paths.base_model_dir)
    (home / "preset").write_text(BENCH_PRESET + "\n")
    return paths


def bare_loop_seconds(config: RunConfig, paths: WtaPaths, steps: int) -> float:
    """Time a plain peft loop: random batches of the stored clips, v-prediction loss, AdamW."""
    from wta_core.model import load_base_model
    from safetensors.torch import load_file

    clips = load_file(str(paths.dataset_dir / "features.safetensors"))["features"]
    model = attach_lora(load_base_model(paths.base_model_dir), config.lora)
    denoiser = Denoiser(model)
    scheduler = training_scheduler()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lora.learning_rate)
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randn(config.lora.batch_size, 384, generator=generator)
    start = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(0, clips.shape[0], (config.lora.batch_size,), generator=generator)
        clean = clips[index]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, 1000, (config.lora.batch_size,), generator=generator)
        noisy, target = noisy_sample_and_target(scheduler, clean, noise, timesteps)
        loss = torch.nn.functional.mse_loss(denoiser(noisy, timesteps, prompt), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def asset_seconds(paths: WtaPaths, steps: int, launcher: str, partition: str) -> float:
    """Wall seconds of one lora_adapters partition materialised through Dagster."""
    from wta_dagster.assets.adapters import lora_adapters
    from wta_dagster.compute import TrainingResource
    from wta_dagster.resources import WtaSettings

    shutil.rmtree(paths.adapter_dir(partition), ignore_errors=True)
    shutil.rmtree(paths.checkpoint_dir(partition), ignore_errors=True)
    start = time.perf_counter()
    result = dg.materialize(
        [lora_adapters],
        partition_key=partition,
        resources={"settings": WtaSettings(home=str(paths.home), dataset="embedded", preset=BENCH_PRESET),
                   "training": TrainingResource(device="cpu", num_threads=THREADS, launcher=launcher),
                   "pipes_client": dg.PipesSubprocessClient()},
        selection=[lora_adapters],
    )
    seconds = time.perf_counter() - start
    if not result.success:
        raise RuntimeError(f"benchmark materialisation of {partition!r} with {launcher} failed")
    return seconds


def run(quick: bool = False) -> dict:
    # The full run trains as many steps as one demo adapter, so the fixed cost of a
    # materialisation weighs in the overhead as much as it does in the demo.
    steps = 10 if quick else get_preset("demo").lora.steps
    repeats = 1 if quick else 3
    config = _config(steps)
    import wta_dagster.assets.adapters  # noqa: F401  (partitions are computed before the preset changes)

    PRESETS[BENCH_PRESET] = config  # the asset and the Pipes child look presets up by name
    os.environ["WTA_PRESET"] = BENCH_PRESET
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            paths = _make_home(Path(folder) / "home", config, clips_per_genre=10 if quick else 40)
            os.environ["WTA_HOME"] = str(paths.home)
            bare = statistics.median([bare_loop_seconds(config, paths, steps) for _ in range(repeats)])
            in_process = statistics.median([asset_seconds(paths, steps, "in_process", "chorale") for _ in range(repeats)])
            pipes = None
            notes = []
            try:
                pipes = statistics.median([asset_seconds(paths, steps, "pipes", "fiddle") for _ in range(repeats)])
            except RuntimeError as error:
                notes.append({"note": f"the Pipes launcher failed: {error}"})
            rows = [{"variant": "bare peft loop (baseline)", "seconds": bare},
                    {"variant": "lora_adapters asset, in process", "seconds": in_process}]
            if pipes is not None:
                rows.append({"variant": "lora_adapters asset, Pipes subprocess", "seconds": pipes})
            for row in rows:
                row["steps_per_second"] = steps / row["seconds"]
                row["overhead_vs_bare"] = row["seconds"] / bare - 1.0
            rows += notes

            growth = []
            clips = load_features(paths)
            embeddings = torch.randn(clips.shape[0], 384, generator=torch.Generator().manual_seed(1))
            for members in ([10, 40] if quick else [40, 80, 160]):
                for step_count in ([5, 10] if quick else [20, 40, 80]):
                    mask = torch.zeros(clips.shape[0], dtype=torch.bool)
                    mask[:members] = True
                    lora = dataclasses.replace(config.lora, steps=step_count, checkpoint_every=step_count)
                    target = Path(folder) / f"growth-{members}-{step_count}"
                    result = train_lora(paths.base_model_dir, clips, embeddings, mask, lora, 0, target,
                                        Path(folder) / "growth-checkpoints", num_threads=THREADS)
                    growth.append({"members": members, "steps": step_count, "seconds": result.seconds,
                                   "seconds_per_step": result.seconds / step_count})
    finally:
        torch.set_num_threads(previous_threads)
        PRESETS.pop(BENCH_PRESET, None)
    return {"steps": steps, "batch": config.lora.batch_size, "rank": config.lora.rank, "threads": THREADS,
            "repeats": repeats, "rows": rows, "growth": growth}


def load_features(paths: WtaPaths) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(paths.dataset_dir / "features.safetensors"))["features"]


def to_markdown(results: dict) -> str:
    lines = [f"{results['steps']} optimizer steps, batch {results['batch']}, LoRA rank {results['rank']}, "
             f"{results['threads']} torch threads, median of {results['repeats']}. The asset times are the "
             "whole materialisation (run start, data loading, checkpoints, DuckDB rows, metadata plot).", "",
             "| variant | seconds | steps/s | overhead vs bare loop |", "|---|---:|---:|---:|"]
    for row in results["rows"]:
        if "variant" in row:
            lines.append(f"| {row['variant']} | {row['seconds']:.2f} | {row['steps_per_second']:.2f} | "
                         f"{row['overhead_vs_bare'] * 100:+.1f}% |")
    lines += [f"Note: {row['note']}" for row in results["rows"] if "note" in row]
    for row in results["rows"]:
        if row.get("variant", "").startswith("lora_adapters"):
            verdict = "met" if row["overhead_vs_bare"] < TARGET_OVERHEAD else "missed"
            lines.append(f"\n{row['variant']}: overhead {row['overhead_vs_bare'] * 100:+.1f}% against the "
                         f"{TARGET_OVERHEAD:.0%} target ({verdict}).")
    lines += ["", "Training time against subset size and steps (train_lora alone):", "",
              "| clips in subset | steps | seconds | seconds per step |", "|---:|---:|---:|---:|"]
    lines += [f"| {row['members']} | {row['steps']} | {row['seconds']:.2f} | {row['seconds_per_step']:.3f} |"
              for row in results["growth"]]
    return "\n".join(lines)
