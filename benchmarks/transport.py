"""Time the per-step Wasserstein-1 methods on one trajectory pair.

For each cloud size, two seeded random trajectories of `N_STEPS` steps, 64 channels and
that many frames are compared with every method of `wta_core.transport.step_distances`.
Each time is the median over repeats of the wall time for the whole pair. The baseline
is the per-step `ot.emd2` loop (method "emd"), timed in the same process, and building
the Euclidean cost matrices alone gives the floor for any exact method.

Run from the repository root:

    python -m benchmarks.transport --quick
    python -m benchmarks.transport --sizes 1024 --repeats 1

At 4,096 frames one `ot.emd2` call takes seconds and one Sinkhorn step minutes on a 2-core
machine, so the full run times that size once, over `LARGE_MEASURED_STEPS` of the steps,
and scales the times to the 100-step pair; the table says which rows are scaled.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import ot
import scipy

from wta_core.transport import _euclidean_cost_blas, step_distances

logger = logging.getLogger(__name__)

SIZES = (64, 256, 1024, 4096)
REPEATS = 3
QUICK_SIZES = (16, 64)
QUICK_REPEATS = 2
N_STEPS = 100
CHANNELS = 64
SEED = 0

BASELINE = "emd2 loop"
# Label of each timed variant, and the step_distances method behind it. The cost-matrix
# floor has no method because it only builds the matrices.
VARIANTS = {
    "cost matrices only": None,
    "exact (assignment)": "exact",
    BASELINE: "emd",
    "sliced": "sliced",
    "sinkhorn": "sinkhorn",
}


# Sizes timed over fewer steps, their times scaled linearly to N_STEPS: every step costs the
# same (one cost matrix and one solve of the same size), so the scaling adds no model error.
# Sinkhorn's three stabilised solves took over two minutes per step at 4,096 points.
LARGE_SIZE = 4096
LARGE_MEASURED_STEPS = {"cost matrices only": 5, "exact (assignment)": 5, BASELINE: 5, "sliced": 5, "sinkhorn": 1}
LARGE_REPEATS = 1


def make_trajectories(
    n_frames: int, n_steps: int = N_STEPS, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Build a seeded trajectory pair of shape [n_steps, CHANNELS, n_frames].

    The second trajectory is the first plus Gaussian noise whose scale grows linearly
    from 0.1 at step 0 to 1.0 at the last step, so the pairs run from nearly equal
    states to clearly different ones.
    """
    rng = np.random.default_rng(seed)
    traj_a = rng.normal(size=(n_steps, CHANNELS, n_frames))
    noise_scale = np.linspace(0.1, 1.0, n_steps)[:, None, None]
    traj_b = traj_a + noise_scale * rng.normal(size=traj_a.shape)
    return traj_a, traj_b


def build_cost_matrices(traj_a: np.ndarray, traj_b: np.ndarray) -> None:
    """Only the cost matrices, built the fastest way the exact path knows (one BLAS product)."""
    for step in range(traj_a.shape[0]):
        _euclidean_cost_blas(np.ascontiguousarray(traj_a[step].T), np.ascontiguousarray(traj_b[step].T))


def time_call(function: Callable[[], object]) -> tuple[float, object, int]:
    """Return the wall time of one call, its result and the number of warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - start
    return seconds, result, len(caught)


def _spread(n_steps: int, count: int) -> np.ndarray:
    """`count` step indices evenly spread over `n_steps`; one step is the middle one."""
    if count >= n_steps:
        return np.arange(n_steps)
    if count == 1:
        return np.array([n_steps // 2])
    return np.unique(np.linspace(0, n_steps - 1, count).round().astype(int))


def measure_size(n_frames: int, repeats: int, n_steps: int,
                 measured_steps: dict[str, int] | None = None) -> list[dict]:
    """Time every variant on one trajectory pair and compare its distances with exact.

    `measured_steps` maps a variant to how many of the `n_steps` steps it is timed on:
    that many steps evenly spread over the pair, so they span near-equal to clearly
    different states. Its times are then scaled to `n_steps`, and its errors are taken
    against exact on the same steps.
    """
    traj_a, traj_b = make_trajectories(n_frames, n_steps)
    measured_steps = measured_steps or {}
    picks = {label: _spread(n_steps, measured_steps.get(label, n_steps)) for label in VARIANTS}
    times: dict[str, list[float]] = {label: [] for label in VARIANTS}
    distances: dict[str, np.ndarray] = {}
    warning_counts: dict[str, int] = {}

    # Repeats run the variants in turn, so that slow drift of a shared machine affects
    # all of them alike.
    for repeat in range(repeats):
        for label, method in VARIANTS.items():
            steps = picks[label]
            first, second = traj_a[steps], traj_b[steps]
            if method is None:
                call = functools.partial(build_cost_matrices, first, second)
            else:
                call = functools.partial(step_distances, first, second, method=method)
            seconds, result, n_warnings = time_call(call)
            times[label].append(seconds * n_steps / len(steps))
            if method is not None and repeat == 0:
                distances[label] = result
                warning_counts[label] = n_warnings
            logger.info(
                "%d frames, repeat %d: %s took %.3f s over %d steps", n_frames, repeat + 1, label, seconds,
                len(steps)
            )

    exact_steps = list(picks["exact (assignment)"])
    baseline_seconds = statistics.median(times[BASELINE])
    rows = []
    for label, method in VARIANTS.items():
        seconds = statistics.median(times[label])
        row = {
            "frames": n_frames,
            "variant": label,
            "method": method,
            "seconds_median": seconds,
            "seconds_all": times[label],
            "speedup_vs_emd2_loop": baseline_seconds / seconds,
            "max_relative_error": None,
            "median_relative_error": None,
            "warnings": warning_counts.get(label, 0),
        }
        row["measured_steps"] = len(picks[label])
        if method is not None:
            exact = distances["exact (assignment)"][[exact_steps.index(step) for step in picks[label]]]
            relative_error = np.abs(distances[label] - exact) / exact
            row["max_relative_error"] = float(relative_error.max())
            row["median_relative_error"] = float(np.median(relative_error))
        rows.append(row)
    return rows


def run(
    quick: bool = False,
    *,
    sizes: Sequence[int] | None = None,
    repeats: int | None = None,
    n_steps: int = N_STEPS,
) -> dict:
    """Measure every variant at each size and return the figures with the environment.

    Parameters
    ----------
    quick : bool
        Use `QUICK_SIZES` and `QUICK_REPEATS` (about 20 s on a loaded 2-core machine)
        instead of `SIZES` and `REPEATS` (hours). `sizes` and `repeats`, when given,
        override both.
    sizes : sequence of int, optional
        Frames per latent state, that is points per cloud.
    repeats : int, optional
        Timed runs per variant; each time reported is the median.
    n_steps : int
        Sampling steps per trajectory.
    """
    if sizes is None:
        sizes = QUICK_SIZES if quick else SIZES
    sizes = tuple(sizes)
    if repeats is None:
        repeats = QUICK_REPEATS if quick else REPEATS
    if repeats < 1 or n_steps < 1 or any(size < 1 for size in sizes):
        raise ValueError(
            f"sizes, repeats and n_steps must be >= 1, got sizes={sizes}, "
            f"repeats={repeats}, n_steps={n_steps}"
        )

    logger.info("Timing %d variants at sizes %s, %d repeats", len(VARIANTS), sizes, repeats)
    rows = []
    for n_frames in sizes:
        if n_frames >= LARGE_SIZE:
            rows.extend(measure_size(n_frames, LARGE_REPEATS, n_steps, LARGE_MEASURED_STEPS))
        else:
            rows.extend(measure_size(n_frames, repeats, n_steps))
    return {
        "config": {
            "quick": quick,
            "sizes": list(sizes),
            "repeats": repeats,
            "n_steps": n_steps,
            "channels": CHANNELS,
            "seed": SEED,
        },
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pot": ot.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            # Other work on the machine and BLAS threads both move these timings.
            "load_average_1min": os.getloadavg()[0],
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
        },
        "rows": rows,
    }


def to_markdown(results: dict) -> str:
    """Render the figures of `run` as a short header and one Markdown table."""
    config = results["config"]
    environment = results["environment"]
    lines = [
        f"Trajectory pair of {config['n_steps']} steps, {config['channels']} channels; "
        f"median of {config['repeats']} repeats; seed {config['seed']}.",
        f"Python {environment['python']}, NumPy {environment['numpy']}, "
        f"SciPy {environment['scipy']}, POT {environment['pot']}, "
        f"{environment['machine']} with {environment['cpu_count']} CPUs, "
        f"load average {environment['load_average_1min']:.2f} at the start, "
        f"OPENBLAS_NUM_THREADS={environment['blas_threads']}.",
        "Errors are per step, relative to the exact distance. Warnings are those the "
        f"solver raised over the {config['n_steps']} steps of the first repeat.",
        "",
        "Rows marked * were timed once over fewer steps, spread over the pair (their warnings "
        f"and errors are over those steps), and their times scaled to {config['n_steps']} steps.",
        "",
        "| frames | variant | time per pair (s) | speedup vs emd2 loop "
        "| max rel. error vs exact | median rel. error | warnings |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        count = row["measured_steps"]
        scaled = f" * ({count} step{'s' if count > 1 else ''})" if count != config["n_steps"] else ""
        lines.append(
            f"| {row['frames']}{scaled} | {row['variant']} | {row['seconds_median']:.3f} "
            f"| {row['speedup_vs_emd2_loop']:.2f} | {_format_error(row['max_relative_error'])} "
            f"| {_format_error(row['median_relative_error'])} | {row['warnings']} |"
        )
    lines += ["", *summary_lines(results["rows"])]
    return "\n".join(lines)


TARGET_SIZE = 1024
TARGET_SPEEDUP = 20.0


def summary_lines(rows: list[dict]) -> list[str]:
    """Summarise the exact path against the cost-matrix floor per size, and the 1,024-point target."""
    by_size: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_size.setdefault(row["frames"], {})[row["variant"]] = row
    lines = []
    floors = [f"{frames}: {variants['exact (assignment)']['seconds_median'] / variants['cost matrices only']['seconds_median']:.1f}x"
              for frames, variants in sorted(by_size.items())]
    lines.append("Exact path time over the cost-matrix floor (1.0x would mean the solve is free): "
                 + ", ".join(floors) + ".")
    target = by_size.get(TARGET_SIZE)
    if target is None:
        lines.append(f"The {TARGET_SIZE:,}-point target was not measured in this run.")
        return lines
    speedup = target["exact (assignment)"]["speedup_vs_emd2_loop"]
    error = target[BASELINE]["max_relative_error"]
    verdict = "met" if speedup >= TARGET_SPEEDUP else f"missed by a factor of {TARGET_SPEEDUP / speedup:.1f}"
    lines.append(f"Target at {TARGET_SIZE:,} points: the exact path is {speedup:.1f}x faster than the per-step "
                 f"`ot.emd2` loop (target {TARGET_SPEEDUP:.0f}x, {verdict}); the two differ by at most "
                 f"{error:.1e} relative.")
    return lines


def _format_error(value: float | None) -> str:
    return "" if value is None else f"{value:.2e}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--sizes", type=int, nargs="+", help="frames per latent state")
    parser.add_argument("--repeats", type=int, help="timed runs per variant")
    parser.add_argument("--steps", type=int, default=N_STEPS, help="sampling steps per trajectory")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = run(
        arguments.quick, sizes=arguments.sizes, repeats=arguments.repeats, n_steps=arguments.steps
    )
    print(to_markdown(results))


if __name__ == "__main__":
    main()
