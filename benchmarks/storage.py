"""Bytes and write/read throughput of trajectory storage: safetensors float16 against numpy .npy.

One trajectory here is one adapter's file as the pipeline stores it: latents and predicted
clean samples [prompts, seeds, steps, channels, frames], at the demo preset's shape.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from wta_core.config import get_preset

REPEATS = 5


def _shape(quick: bool) -> tuple[int, ...]:
    config = get_preset("demo")
    prompts, seeds, steps = 10, len(config.sample.seeds), config.sample.steps
    if quick:
        steps = 8
    return (prompts, seeds, steps, config.audio.n_mels, config.audio.clip_frames)


def _timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False) -> dict:
    """Measure file size, write and read seconds for each format; the .npy float32 pair is the baseline."""
    shape = _shape(quick)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(shape, generator=generator)
    predicted = torch.randn(shape, generator=generator)
    repeats = 2 if quick else REPEATS
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        variants = {
            "safetensors float16 (stored)": ("st16", torch.float16),
            "safetensors float32": ("st32", torch.float32),
            "numpy .npy float32 (baseline)": ("npy32", torch.float32),
            "numpy .npy float16": ("npy16", torch.float16),
        }
        for label, (kind, dtype) in variants.items():
            tensors = {"latents": latents.to(dtype).contiguous(), "predicted_clean": predicted.to(dtype).contiguous()}
            if kind.startswith("st"):
                path = root / f"{kind}.safetensors"

                def write(path=path, tensors=tensors):
                    save_file(tensors, str(path))

                def read(path=path):
                    # load_file maps the file lazily; summing touches every byte, as .npy reads do.
                    return {name: float(t.float().sum()) for name, t in load_file(str(path)).items()}

                files = [path]
            else:
                paths = {name: root / f"{kind}.{name}.npy" for name in tensors}

                def write(paths=paths, tensors=tensors):
                    for name, tensor in tensors.items():
                        np.save(paths[name], tensor.numpy())

                def read(paths=paths):
                    return {name: float(np.load(path).astype(np.float32).sum()) for name, path in paths.items()}

                files = list(paths.values())
            write_s = _timed(write, repeats)
            read_s = _timed(read, repeats)
            size = sum(file.stat().st_size for file in files)
            rows.append({"format": label, "bytes": size, "write_s": write_s, "read_s": read_s,
                         "write_mb_s": size / write_s / 1e6, "read_mb_s": size / read_s / 1e6})
    baseline = next(row for row in rows if "baseline" in row["format"])
    for row in rows:
        row["size_vs_baseline"] = row["bytes"] / baseline["bytes"]
        row["read_speedup_vs_baseline"] = baseline["read_s"] / row["read_s"]
    return {"shape": list(shape), "repeats": repeats, "rows": rows}


def to_markdown(results: dict) -> str:
    lines = [f"One adapter's trajectories, latents and predicted clean samples of shape {results['shape']} "
             f"(prompts, seeds, steps, channels, frames); median of {results['repeats']} repeats.", "",
             "| format | bytes | size vs .npy float32 | write (s) | write MB/s | read (s) | read MB/s | read speedup vs .npy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        lines.append(f"| {row['format']} | {row['bytes']:,} | {row['size_vs_baseline']:.2f} | {row['write_s']:.3f} | "
                     f"{row['write_mb_s']:.0f} | {row['read_s']:.3f} | {row['read_mb_s']:.0f} | "
                     f"{row['read_speedup_vs_baseline']:.2f} |")
    return "\n".join(lines)
