"""Wall time and peak memory of the main job, stage by stage, from the Dagster instance.

A preset's main job runs as a subprocess on a fresh home; its peak resident memory is the
largest sum over its process tree (the main job and its worker processes), sampled every
half second. Stage times come from the step statistics that Dagster records for every run
in the home's instance: the sum over partitions, and the span from the stage's first start
to its last end, which is shorter than the sum when partitions run in parallel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
TARGET_MINUTES = 20


def _sample_peak(process: subprocess.Popen, peak: list[int], stop: threading.Event) -> None:
    root = psutil.Process(process.pid)
    while not stop.is_set():
        try:
            members = [root, *root.children(recursive=True)]
            total = 0
            for member in members:
                try:
                    total += member.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            peak[0] = max(peak[0], total)
        except psutil.NoSuchProcess:
            return
        time.sleep(0.5)


def stage_seconds(dagster_home: Path) -> dict[str, dict]:
    """Seconds per asset step summed over every run in the instance, with the partition count."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    stages: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "runs": 0, "slowest_s": 0.0,
                                                   "first_start": float("inf"), "last_end": 0.0})
    for record in instance.get_run_records():
        for step in instance.get_run_step_stats(record.dagster_run.run_id):
            if step.start_time is None or step.end_time is None:
                continue
            seconds = step.end_time - step.start_time
            stage = stages[step.step_key]
            stage["seconds"] += seconds
            stage["runs"] += 1
            stage["slowest_s"] = max(stage["slowest_s"], seconds)
            stage["first_start"] = min(stage["first_start"], step.start_time)
            stage["last_end"] = max(stage["last_end"], step.end_time)
    for stage in stages.values():
        stage["span_s"] = stage.pop("last_end") - stage.pop("first_start")
    return dict(stages)


def run_preset(preset: str, home: Path, cache: Path | None = None) -> dict:
    """Run the main job of `preset` on `home` and return wall time, peak memory and stage times."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env = dict(os.environ) | {"WTA_HOME": str(home), "WTA_PRESET": preset, "WTA_DATASET": "embedded",
                              "DAGSTER_HOME": str(dagster_home), "HF_HUB_OFFLINE": "1"}
    if cache is not None:
        env["WTA_CACHE"] = str(cache)
    peak = [0]
    stop = threading.Event()
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "wta_dagster.main"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = threading.Thread(target=_sample_peak, args=(process, peak, stop), daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join(timeout=5)
    if process.returncode != 0:
        raise RuntimeError(f"main job of {preset!r} failed:\n{stderr[-2000:]}")
    return {"preset": preset, "wall_s": wall, "peak_rss_bytes": peak[0], "stages": stage_seconds(dagster_home)}


def run(quick: bool = False, demo_home: str | None = None, demo: bool = False) -> dict:
    """Run the smoke preset from scratch, and the demo preset if `demo`.

    The smoke run renders its clips into a fresh cache. The demo run uses the render cache
    of `WTA_CACHE` when set, as homes sharing one cache would, and otherwise renders into
    its fresh home. The page states whether the cache already held the clips. With
    `demo_home`, the stages of a finished demo run are read from its instance instead.
    """
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        results["smoke"] = run_preset("smoke", Path(folder) / "home", cache=Path(folder) / "cache")
    if demo:
        cache = Path(os.environ["WTA_CACHE"]) if os.environ.get("WTA_CACHE") else None
        warm = cache is not None and cache.is_dir() and any(cache.iterdir())
        with tempfile.TemporaryDirectory() as folder:
            results["demo"] = run_preset("demo", Path(folder) / "home", cache=cache)
        results["demo"]["render_cache"] = (f"warm ({cache}), so rendering the clips is not in the time" if warm
                                           else "empty, so rendering the clips is part of the time")
    elif demo_home:
        results["demo"] = {"preset": "demo", "wall_s": None, "peak_rss_bytes": None,
                           "stages": stage_seconds(Path(demo_home) / "dagster"), "home": demo_home}
    return results


def to_markdown(results: dict) -> str:
    lines = []
    for name, result in results.items():
        wall = "not measured by this command" if result["wall_s"] is None else f"{result['wall_s']:.0f} s"
        peak = ("not measured by this command" if result["peak_rss_bytes"] is None
                else f"{result['peak_rss_bytes'] / 2**20:.0f} MiB")
        stages = sorted(result["stages"].items(), key=lambda item: -item[1]["seconds"])
        total = sum(stage["seconds"] for _, stage in stages)
        lines += [f"**{name}**: wall time {wall}, peak resident memory of the process tree {peak}, "
                  f"sum of step times {total:.0f} s." + (f" Read from the instance in {result['home']}."
                                                          if result.get("home") else "")
                  + (f" Render cache: {result['render_cache']}." if result.get("render_cache") else ""), "",
                  "| stage (asset step) | seconds, all partitions | share | steps run | slowest step (s) "
                  "| span, first start to last end (s) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for key, stage in stages:
            share = stage["seconds"] / total if total else 0.0
            lines.append(f"| {key} | {stage['seconds']:.1f} | {share:.0%} | {stage['runs']} | {stage['slowest_s']:.1f} "
                         f"| {stage.get('span_s', 0.0):.1f} |")
        if stages and "span_s" in stages[0][1]:
            slowest, stage = max(stages, key=lambda item: item[1]["span_s"])
            lines += ["", f"Slowest stage by span: {slowest}, {stage['span_s']:.0f} s from its first start to its "
                          f"last end ({stage['runs']} steps)."]
            if name == "demo" and result["wall_s"] is not None:
                # The target covers the adapters, trajectories, scores and validation; the method
                # comparison (with its own LDS retrainings) runs last and is reported apart.
                comparison = result["stages"].get("method_comparison", {}).get("span_s", 0.0)
                minutes = (result["wall_s"] - comparison) / 60
                lines.append(f"Demo main job without method_comparison ({comparison:.0f} s): {minutes:.1f} min "
                             f"against the {TARGET_MINUTES} min target ({'met' if minutes < TARGET_MINUTES else 'missed'}); "
                             f"with it, {result['wall_s'] / 60:.1f} min.")
        lines.append("")
    return "\n".join(lines)
