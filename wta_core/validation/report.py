"""Bradford Hill summary of the test results, and the JSON, Markdown and figure report."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wta_core.plots import curves, heatmap  # noqa: E402
from wta_core.validation.result import (  # noqa: E402
    VERDICT_FAIL,
    VERDICT_NOT_RUN,
    VERDICT_PASS,
    TestResult,
    json_safe,
)

# (criterion, test ids, what passing those tests shows). Consistency reads test 9 per seed.
HILL_CRITERIA: tuple[tuple[str, tuple[int, ...], str], ...] = (
    ("strength", (7, 8), "matched scores exceed unmatched ones beyond chance (7) and by a large effect (8)"),
    ("consistency", (9,), "the removed genre is the top-1 attribution on every sampling seed separately (9)"),
    ("specificity", (9, 10), "each prompt points to its own genre (9) and other genres stay near the noise floor (10)"),
    ("temporality", (3, 4), "divergence starts exactly when the model changes (3) and follows prediction differences (4)"),
    ("biological gradient", (6,), "the score grows monotonically with the removed fraction (6)"),
    ("plausibility", (11, 5), "acoustically closer genres interact more (11) and a corrupted genre is singled out (5)"),
    ("experiment", (1, 2), "on a model with known causes, removal recovers the parents (1) without false positives (2)"),
)

STATUS_SUPPORTED = "supported"
STATUS_NOT_SUPPORTED = "not supported"
STATUS_INCOMPLETE = "incomplete"  # no test failed, but some did not run
STATUS_NOT_ASSESSED = "not assessed"  # none of the tests ran


def bradford_hill(results: Sequence[TestResult]) -> list[dict]:
    """Map the test results onto Bradford Hill's criteria of causation.

    A criterion is supported only when every test behind it passed. One failed test
    makes it not supported. Otherwise it is incomplete when some tests did not run,
    and not assessed when none ran. Consistency needs per-seed top-1 shares in test 9,
    each at or above test 9's threshold.
    """
    by_id = {result.test_id: result for result in results}
    summary = []
    for criterion, test_ids, meaning in HILL_CRITERIA:
        verdicts = {str(test_id): by_id[test_id].verdict if test_id in by_id else VERDICT_NOT_RUN for test_id in test_ids}
        evidence = [_evidence(by_id.get(test_id), test_id) for test_id in test_ids]
        if criterion == "consistency":
            status, note = _consistency(by_id.get(9))
            evidence.append(note)
        else:
            status = _status(list(verdicts.values()))
        summary.append(
            {
                "criterion": criterion,
                "tests": list(test_ids),
                "verdicts": verdicts,
                "status": status,
                "meaning": meaning,
                "evidence": "; ".join(evidence),
            }
        )
    return summary


def _status(verdicts: list[str]) -> str:
    if VERDICT_FAIL in verdicts:
        return STATUS_NOT_SUPPORTED
    if all(verdict == VERDICT_PASS for verdict in verdicts):
        return STATUS_SUPPORTED
    if all(verdict == VERDICT_NOT_RUN for verdict in verdicts):
        return STATUS_NOT_ASSESSED
    return STATUS_INCOMPLETE


def _consistency(result: TestResult | None) -> tuple[str, str]:
    if result is None or result.passed is None:
        return STATUS_NOT_ASSESSED, "test 9 did not run"
    shares = result.details.get("per_seed_top1_share")
    if not shares:
        return STATUS_NOT_ASSESSED, "no per-seed scores were given, so agreement across seeds is unknown"
    failing = [index for index, share in enumerate(shares) if share < result.threshold]
    text = "per-seed top-1 shares " + ", ".join(f"{share:.2f}" for share in shares)
    if failing:
        return STATUS_NOT_SUPPORTED, f"{text}; seeds at positions {failing} fall below {result.threshold:g}"
    return STATUS_SUPPORTED, text


def _evidence(result: TestResult | None, test_id: int) -> str:
    if result is None:
        return f"test {test_id} NOT RUN: absent from the results"
    if result.passed is None:
        return f"test {test_id} NOT RUN: {result.details.get('reason', 'no reason given')}"
    return f"test {test_id} {result.verdict}: value {_format(result.value)}, threshold {_format(result.threshold)}"


def _format(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(results: Sequence[TestResult], hill: list[dict], run_info: dict, folder) -> dict[str, Path]:
    """Write `validation_report.json`, `validation_report.md` and the figures into `folder`.

    `run_info` is copied into both reports. It should contain the run configuration and
    the code version, and the Markdown report prints `run_info["code_version"]` on its own
    line. Values that JSON cannot store (paths, for example) are written as strings.

    Figures: the score matrix heatmap (from test 7), the dose-response curve (test 6)
    and the switched divergence curves (test 3), each drawn only when that test ran.
    Every file is written to a temporary name in `folder` and then renamed, so a reader
    never sees a half-written file. Returns {name: path} of every file written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    by_id = {result.test_id: result for result in results}
    figures = _draw_figures(by_id, folder)

    payload = {
        "results": [result.to_dict() for result in results],
        "bradford_hill": hill,
        "run_info": run_info,
        "figures": {name: path.name for name, path in figures.items()},
    }
    paths = dict(figures)
    paths["json"] = _write_text(folder / "validation_report.json", json.dumps(json_safe(payload), indent=2, default=str))
    paths["markdown"] = _write_text(folder / "validation_report.md", _markdown(results, hill, run_info, figures))
    return paths


def _write_text(path: Path, text: str) -> Path:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; reports are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _draw_figures(by_id: dict[int, TestResult], folder: Path) -> dict[str, Path]:
    figures: dict[str, Path] = {}

    permutation = by_id.get(7)
    if permutation is not None and permutation.passed is not None:
        matrix = np.asarray(permutation.details["score_matrix"], dtype=float)
        names = permutation.details.get("genres") or [str(index) for index in range(matrix.shape[0])]
        figures["score_matrix"] = heatmap(
            matrix, names, names, "WTA score: rows removed genre, columns prompt genre", folder / "score_matrix.png"
        )

    dose = by_id.get(6)
    if dose is not None and dose.passed is not None:
        figures["dose_response"] = _dose_figure(dose, folder / "dose_response.png")

    switch = by_id.get(3)
    if switch is not None and switch.passed is not None:
        series = {f"switch at step {step}": np.asarray(curve) for step, curve in switch.details["curves"].items()}
        figures["switch_curves"] = curves(
            series, "step (state after step i)", "W1 divergence", "Switched trajectories", folder / "switch_curves.png"
        )
    return figures


def _dose_figure(result: TestResult, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(result.details["fractions"], result.details["scores"], marker="o")
    axis.set_xlabel("fraction of the genre removed")
    axis.set_ylabel("WTA score")
    axis.set_title(f"Dose-response, Pearson r = {_format(result.value)}", fontsize=9)
    temporary = path.with_name(f".{path.stem}.tmp.png")
    try:
        figure.savefig(temporary, dpi=90, bbox_inches="tight", format="png")
    finally:
        plt.close(figure)
    os.replace(temporary, path)
    return path


def _cell(value) -> str:
    return _format(value).replace("|", "\\|")


def _markdown(results: Sequence[TestResult], hill: list[dict], run_info: dict, figures: dict[str, Path]) -> str:
    lines = ["# WTA validation report", ""]
    counts = {verdict: sum(1 for result in results if result.verdict == verdict) for verdict in (VERDICT_PASS, VERDICT_FAIL, VERDICT_NOT_RUN)}
    lines.append(f"{counts[VERDICT_PASS]} passed, {counts[VERDICT_FAIL]} failed, {counts[VERDICT_NOT_RUN]} not run.")
    lines += ["", "| id | name | metric | value | threshold | verdict |", "|---|---|---|---|---|---|"]
    for result in results:
        lines.append(
            f"| {result.test_id} | {_cell(result.name)} | {_cell(result.metric)} | {_cell(result.value)} "
            f"| {_cell(result.threshold)} | {result.verdict} |"
        )

    lines += ["", "## Details", ""]
    for result in results:
        scalars = {key: value for key, value in result.details.items() if isinstance(value, (str, int, float, bool))}
        text = ", ".join(f"{key} = {_format(value)}" for key, value in scalars.items()) or "no scalar details"
        lines.append(f"- Test {result.test_id} ({result.name}): {text}")

    lines += ["", "## Bradford Hill criteria", "", "| criterion | tests | status | evidence |", "|---|---|---|---|"]
    for row in hill:
        tests = ", ".join(str(test_id) for test_id in row["tests"])
        lines.append(f"| {row['criterion']} | {tests} | {row['status']} | {_cell(row['evidence'])} |")

    lines += ["", "## Run configuration", ""]
    lines.append(f"Code version: {run_info.get('code_version', 'not recorded')}")
    lines += ["", "```json", json.dumps(json_safe(run_info), indent=2, sort_keys=True, default=str), "```"]

    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({path.name})" for name, path in figures.items()]
    return "\n".join(lines) + "\n"
