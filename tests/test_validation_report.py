"""`run_all`, the Bradford Hill summary and the written report."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from wta_core.config import ValidationConfig
from wta_core.validation import ValidationInputs, bradford_hill, run_all, write_report
from wta_core.validation.result import TEST_NAMES, make_result, not_run

CFG = dataclasses.replace(ValidationConfig(), permutation_resamples=999)
GENRES = ("blues", "jazz", "rock", "folk")


def _full_inputs() -> ValidationInputs:
    rng = np.random.default_rng(0)
    n_genres = len(GENRES)
    positions = np.arange(n_genres, dtype=float)
    distances = np.abs(positions[:, None] - positions[None, :])
    seeds = np.stack([1.0 / (1.0 + distances) + 0.01 * rng.standard_normal(distances.shape) for _ in range(3)])
    for seed in seeds:
        np.fill_diagonal(seed, 3.0)
    curve = np.concatenate([np.zeros(3), 0.1 * 1.4 ** np.arange(9)])
    return ValidationInputs(
        genres=GENRES,
        seed_scores=seeds,
        control_scores=rng.uniform(0.0, 1.0, 40),
        dose_fractions=[0.0, 0.25, 0.5, 0.75, 1.0],
        dose_scores=[0.05, 0.8, 1.5, 2.3, 3.0],
        noise_scores={"blues": 2.0, "jazz": 0.3, "rock": 0.2, "folk": 0.1},
        noise_genre="blues",
        switch_curves={3: curve},
        prediction_differences=None,
        divergences=None,
        proximity=distances,
        scm=None,
    )


def test_run_all_returns_eleven_in_order():
    results = run_all(ValidationInputs(scm=None), CFG)
    assert [result.test_id for result in results] == list(range(1, 12))
    assert [result.name for result in results] == [TEST_NAMES[index] for index in range(1, 12)]


def test_run_all_empty_inputs_all_not_run():
    results = run_all(ValidationInputs(scm=None), CFG)
    assert all(result.passed is None for result in results)
    assert all(result.details["reason"] for result in results)


def test_run_all_runs_given_tests():
    results = {result.test_id: result for result in run_all(_full_inputs(), CFG)}
    for test_id in (3, 5, 6, 8, 9, 10):
        assert results[test_id].passed is True, f"test {test_id}: {results[test_id].details}"
    assert results[4].passed is None
    assert results[7].passed is False  # 4 genres: the smallest attainable p is 1/24
    assert results[11].passed is True


def test_run_all_derives_matrix_from_seeds():
    inputs = _full_inputs()
    results = run_all(inputs, CFG)
    np.testing.assert_allclose(results[6].details["score_matrix"], np.mean(inputs.seed_scores, axis=0))


def test_run_all_runs_scm_by_default():
    results = run_all(ValidationInputs(), CFG)
    assert results[0].passed is True
    assert results[1].passed is True


def test_run_all_rejects_bad_matrix():
    with pytest.raises(ValueError, match="square"):
        run_all(ValidationInputs(scm=None, score_matrix=np.ones((2, 3))), CFG)


def test_not_run_is_never_passed():
    result = not_run(5, 1.0, "no input")
    assert result.passed is None
    assert result.verdict == "NOT RUN"


def _results(verdicts: dict[int, bool | None]) -> list:
    results = []
    for test_id, passed in verdicts.items():
        if passed is None:
            results.append(not_run(test_id, 0.5, "missing"))
        else:
            results.append(make_result(test_id, 1.0, 0.5, passed, {}))
    return results


def test_hill_supported_when_all_pass():
    hill = {row["criterion"]: row for row in bradford_hill(_results({7: True, 8: True}))}
    assert hill["strength"]["status"] == "supported"
    assert hill["strength"]["verdicts"] == {"7": "PASS", "8": "PASS"}


def test_hill_not_supported_on_one_fail():
    hill = {row["criterion"]: row for row in bradford_hill(_results({3: True, 4: False}))}
    assert hill["temporality"]["status"] == "not supported"


def test_hill_incomplete_with_not_run():
    hill = {row["criterion"]: row for row in bradford_hill(_results({1: True, 2: None}))}
    assert hill["experiment"]["status"] == "incomplete"
    assert "test 2 NOT RUN: missing" in hill["experiment"]["evidence"]


def test_hill_not_assessed_when_absent():
    hill = {row["criterion"]: row for row in bradford_hill([])}
    assert all(row["status"] == "not assessed" for row in hill.values())


def test_hill_consistency_needs_every_seed():
    top1 = make_result(9, 0.75, 1.0, False, {"per_seed_top1_share": [1.0, 0.5]})
    hill = {row["criterion"]: row for row in bradford_hill([top1])}
    assert hill["consistency"]["status"] == "not supported"


def test_hill_consistency_without_seeds():
    top1 = make_result(9, 1.0, 1.0, True, {})
    hill = {row["criterion"]: row for row in bradford_hill([top1])}
    assert hill["consistency"]["status"] == "not assessed"


def test_write_report_files(tmp_path):
    results = run_all(_full_inputs(), CFG)
    paths = write_report(results, bradford_hill(results), {"code_version": "abc123", "config": {"seed": 0}}, tmp_path)
    assert set(paths) == {"json", "markdown", "score_matrix", "dose_response", "switch_curves"}
    for path in paths.values():
        assert path.stat().st_size > 0, f"{path.name} is empty"
    assert sorted(item.name for item in tmp_path.iterdir()) == sorted(path.name for path in paths.values())


def test_write_report_markdown_table(tmp_path):
    results = run_all(_full_inputs(), CFG)
    paths = write_report(results, bradford_hill(results), {"code_version": "abc123"}, tmp_path)
    text = paths["markdown"].read_text()
    assert "| id | name | metric | value | threshold | verdict |" in text
    assert "| 4 | Granger causality |" in text
    assert "NOT RUN" in text
    assert "## Bradford Hill criteria" in text
    assert "Code version: abc123" in text


def test_write_report_json_is_standard(tmp_path):
    results = [make_result(8, float("inf"), 0.8, True, {"pooled_sd": 0.0})]
    paths = write_report(results, bradford_hill(results), {}, tmp_path)
    data = json.loads(paths["json"].read_text(), parse_constant=lambda name: pytest.fail(f"non-standard {name}"))
    assert data["results"][0]["value"] == "inf"
    assert data["results"][0]["verdict"] == "PASS"


def test_write_report_stores_paths_as_text(tmp_path):
    results = [not_run(1, 1.0, "missing")]
    paths = write_report(results, bradford_hill(results), {"home": tmp_path}, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["run_info"]["home"] == str(tmp_path)
