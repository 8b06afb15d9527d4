"""Scoring a whole run: every adapter against the full one, every prompt, seed and target.

Synthetic trajectories of the demo preset's shape stand in for a run, so the figure does not
depend on a finished demo run: the second trajectory of each pair is the first plus noise that
grows over the steps, as in sampling from the same initial noise.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from wta_core.config import get_preset
from wta_core.transport import step_distances, step_weights, wta_score

TARGETS = 2  # latent and predicted clean sample


def _pair(steps: int, channels: int, frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    first = rng.normal(size=(steps, channels, frames))
    scale = np.linspace(0.05, 0.5, steps)[:, None, None]
    return first, first + scale * rng.normal(size=first.shape)


def score_adapters(adapters: int, prompts: int, seeds: int, steps: int, channels: int, frames: int) -> float:
    """Seconds to compute every step distance and score of `adapters` adapters."""
    rng = np.random.default_rng(0)
    pairs = [_pair(steps, channels, frames, rng) for _ in range(4)]
    weights = step_weights(steps, "exponential", 5.0)
    start = time.perf_counter()
    count = 0
    for _ in range(adapters * prompts * seeds * TARGETS):
        first, second = pairs[count % len(pairs)]
        wta_score(step_distances(first, second, "exact"), weights)
        count += 1
    return time.perf_counter() - start


def run(quick: bool = False) -> dict:
    config = get_preset("demo")
    prompts, seeds, steps = 10, len(config.sample.seeds), config.sample.steps
    channels, frames = config.audio.n_mels, config.audio.clip_frames
    demo_adapters = 10 + len(config.lora.control_seeds) + len(config.lora.dose_fractions) + 1
    adapter_counts = [1, 2, 4] if quick else [1, 2, 4, 8, demo_adapters]
    repeats = 1 if quick else 3
    rows = []
    for adapters in adapter_counts:
        times = [score_adapters(adapters, prompts, seeds, steps, channels, frames) for _ in range(repeats)]
        rows.append({"adapters": adapters, "seconds": statistics.median(times)})
    base = rows[0]["seconds"]
    for row in rows:
        row["ratio_vs_one_adapter"] = row["seconds"] / base
    frame_rows = []
    for frame_count in ([64, 128] if quick else [64, 128, 256, 512]):
        seconds = statistics.median([score_adapters(1, 1, 1, steps, channels, frame_count) for _ in range(repeats)])
        frame_rows.append({"frames": frame_count, "seconds_per_pair_and_target": seconds / TARGETS})
    step_rows = []
    for step_count in ([10, 50] if quick else [10, 25, 50, 100, 200]):
        seconds = statistics.median([score_adapters(1, 1, 1, step_count, channels, frames) for _ in range(repeats)])
        step_rows.append({"steps": step_count, "seconds_per_pair_and_target": seconds / TARGETS})
    return {"prompts": prompts, "seeds": seeds, "steps": steps, "shape": [channels, frames],
            "demo_adapters": demo_adapters, "repeats": repeats, "rows": rows,
            "frames": frame_rows, "steps_growth": step_rows}


def to_markdown(results: dict) -> str:
    lines = [f"Exact W1 per step, {results['prompts']} prompts x {results['seeds']} seeds x 2 targets per adapter, "
             f"{results['steps']} steps, latent {results['shape'][0]} x {results['shape'][1]}; "
             f"median of {results['repeats']}. The demo run has {results['demo_adapters']} adapters to score.", "",
             "| adapters | seconds | ratio vs 1 adapter |", "|---:|---:|---:|"]
    for row in results["rows"]:
        lines.append(f"| {row['adapters']} | {row['seconds']:.2f} | {row['ratio_vs_one_adapter']:.2f} |")
    lines += ["", "Growth with frames (points per cloud), one trajectory pair:", "",
              "| frames | seconds per pair |", "|---:|---:|"]
    lines += [f"| {row['frames']} | {row['seconds_per_pair_and_target']:.4f} |" for row in results["frames"]]
    lines += ["", "Growth with sampling steps, one trajectory pair:", "", "| steps | seconds per pair |", "|---:|---:|"]
    lines += [f"| {row['steps']} | {row['seconds_per_pair_and_target']:.4f} |" for row in results["steps_growth"]]
    return "\n".join(lines)
