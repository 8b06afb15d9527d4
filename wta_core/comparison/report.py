"""Rows of the `method_comparison` table, and the Markdown table and bar chart built from them.

One row per (method, metric). The Markdown table has one line per metric with a
"best method" column and a column that says whether WTA is the best, so a metric that
WTA does not win reads as such.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from wta_core.comparison.method import METHOD_WTA  # noqa: E402
from wta_core.comparison.metrics import METRICS, MethodEvaluation  # noqa: E402
from wta_core.validation.result import json_safe  # noqa: E402

COMPARISON_TABLE = "method_comparison"
COMPARISON_SCHEMA = {"method": pl.String, "metric": pl.String, "value": pl.Float64, "details": pl.String}

# Relative tolerance under which two metric values count as a tie for "best method".
_TIE_TOLERANCE = 1e-9


def comparison_rows(evaluations: Sequence[MethodEvaluation]) -> list[dict]:
    """Return one row per (method, metric): method, metric, value, details (a JSON string).

    Metrics come in the order of `metrics.METRICS`. A value that is NaN or infinite
    (a Spearman correlation of constant scores, for example) is stored as None, and
    its details say so.
    """
    rows = []
    for evaluation in evaluations:
        for metric in METRICS:
            if metric not in evaluation.values:
                continue
            value = float(evaluation.values[metric])
            details = dict(evaluation.details.get(metric, {}))
            if not math.isfinite(value):
                details["undefined"] = f"the metric evaluated to {value}, for example because scores are constant"
            rows.append({
                "method": evaluation.method,
                "metric": metric,
                "value": value if math.isfinite(value) else None,
                "details": json.dumps(json_safe(details), sort_keys=True),
            })
    return rows


def comparison_frame(rows: Sequence[dict]) -> pl.DataFrame:
    """Return `rows` as a polars DataFrame with the `method_comparison` schema."""
    return pl.DataFrame(list(rows), schema=COMPARISON_SCHEMA)


def best_methods(rows: Sequence[dict]) -> dict[str, list[str]]:
    """Return, per metric, the methods with the best value (several on a tie), by each metric's direction."""
    table = _value_table(rows)
    best: dict[str, list[str]] = {}
    for metric, by_method in table.items():
        defined = {method: value for method, value in by_method.items() if value is not None}
        if not defined:
            best[metric] = []
            continue
        larger_is_better = METRICS[metric][0]
        target = max(defined.values()) if larger_is_better else min(defined.values())
        best[metric] = [method for method, value in defined.items()
                        if math.isclose(value, target, rel_tol=_TIE_TOLERANCE, abs_tol=_TIE_TOLERANCE)]
    return best


def comparison_markdown(rows: Sequence[dict], reference: str = METHOD_WTA) -> str:
    """Return a Markdown table: one line per metric, one column per method, the best method and WTA's standing.

    The last column reads "yes" when `reference` is the only best method, "tied" when it
    shares the best value, "no" naming the winner when another method is better, and
    "n/a" when `reference` has no value for the metric.
    """
    table = _value_table(rows)
    methods = list(dict.fromkeys(row["method"] for row in rows))
    best = best_methods(rows)

    header = ["metric", "better", *methods, "best method", f"{reference} best?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric, by_method in table.items():
        larger_is_better = METRICS[metric][0]
        cells = [metric, "higher" if larger_is_better else "lower"]
        cells += [_format(by_method.get(method)) for method in methods]
        winners = best[metric]
        cells.append(", ".join(winners) if winners else "n/a")
        cells.append(_standing(reference, by_method.get(reference), winners))
        lines.append("| " + " | ".join(cells) + " |")

    definition = _ground_truth_definition(rows)
    if definition:
        lines.append("")
        lines.append(f"Ground truth: {definition}.")
    return "\n".join(lines) + "\n"


def comparison_plot(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Draw one bar chart per metric with a bar per method, and write it to `path` as PNG, atomically."""
    table = _value_table(rows)
    methods = list(dict.fromkeys(row["method"] for row in rows))
    metrics = list(table)
    if not metrics:
        raise ValueError("no comparison rows to plot; evaluate at least one method first")

    columns = min(3, len(metrics))
    lines = int(np.ceil(len(metrics) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3.6 * columns, 2.9 * lines), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis in axes.flat[len(metrics):]:
        axis.set_axis_off()
    for axis, metric in zip(axes.flat, metrics):
        values = [table[metric].get(method) for method in methods]
        heights = [value if value is not None else 0.0 for value in values]
        bars = axis.bar(range(len(methods)), heights, color=[colours(i % 10) for i in range(len(methods))])
        for bar, value in zip(bars, values):
            label = "n/a" if value is None else f"{value:.3g}"
            axis.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=7)
        axis.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=7)
        direction = "higher is better" if METRICS[metric][0] else "lower is better"
        axis.set_title(f"{metric} ({direction})", fontsize=8)
        axis.axhline(0.0, color="black", linewidth=0.5)
    figure.suptitle("attribution methods against the leave-one-genre-out ground truth", fontsize=9)
    figure.tight_layout()
    return _save_figure(figure, Path(path))


def _value_table(rows: Sequence[dict]) -> dict[str, dict[str, float | None]]:
    """Return {metric: {method: value}} in `METRICS` order, keeping only metrics present in `rows`."""
    table: dict[str, dict[str, float | None]] = {}
    for metric in METRICS:
        by_method = {row["method"]: row["value"] for row in rows if row["metric"] == metric}
        if by_method:
            table[metric] = by_method
    unknown = sorted({row["metric"] for row in rows} - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown} in comparison rows; known: {list(METRICS)}")
    return table


def _standing(reference: str, value: float | None, winners: list[str]) -> str:
    if value is None or not winners:
        return "n/a"
    if reference in winners:
        return "yes" if len(winners) == 1 else "tied"
    return f"no: {', '.join(winners)}"


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _ground_truth_definition(rows: Sequence[dict]) -> str | None:
    for row in rows:
        if row["metric"] == "spearman_effect":
            return json.loads(row["details"]).get("ground_truth")
    return None


def _save_figure(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}.png"
    try:
        figure.savefig(temporary, dpi=90, bbox_inches="tight")
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        temporary.unlink(missing_ok=True)
    return path
