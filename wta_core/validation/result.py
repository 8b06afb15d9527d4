"""The outcome of one validation test, and the names of the eleven tests."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

TEST_NAMES: dict[int, str] = {
    1: "SCM parent recovery",
    2: "SCM false positives",
    3: "Switch lag",
    4: "Granger causality",
    5: "Noise isolation",
    6: "Dose-response",
    7: "Permutation test",
    8: "Effect size",
    9: "Leave-one-out top-1",
    10: "Unmatched independence",
    11: "Proximity gradient",
}

# The quantity in `TestResult.value` of each test, and the side of the threshold that passes.
TEST_METRICS: dict[int, str] = {
    1: "share of generations whose parents are all in the top-|parents| scores (pass: >= threshold)",
    2: "share of non-parents scoring above the noise threshold (pass: <= threshold)",
    3: "share of switch steps where divergence first appears at the switch (pass: >= threshold)",
    4: "Fisher-combined Granger p-value (pass: < threshold)",
    5: "rank of the corrupted genre, 1 = largest score (pass: <= threshold)",
    6: "Pearson r of score on removed fraction, scores must also be non-decreasing (pass: >= threshold)",
    7: "permutation p-value of mean matched minus mean unmatched score (pass: < threshold)",
    8: "Cohen's d, matched versus unmatched scores (pass: >= threshold)",
    9: "share of prompts whose own genre's removal scores highest (pass: >= threshold)",
    10: "share of unmatched scores below the noise floor (pass: >= threshold)",
    11: "Spearman p-value of closeness versus unmatched score, rho must be > 0 (pass: < threshold)",
}

VERDICT_PASS = "PASS"
VERDICT_FAIL = "FAIL"
VERDICT_NOT_RUN = "NOT RUN"


@dataclass(frozen=True)
class TestResult:
    """One validation test's measured value, its threshold and the verdict.

    `passed` is None when the test did not run, and `details["reason"]` then gives the cause.
    A test that did not run is never counted as passed.
    """

    __test__ = False  # keeps pytest from collecting this class from test modules

    test_id: int
    name: str
    metric: str
    value: float | None
    threshold: float | None
    passed: bool | None
    details: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return VERDICT_NOT_RUN
        return VERDICT_PASS if self.passed else VERDICT_FAIL

    def to_dict(self) -> dict:
        """Return the fields plus `verdict`, with NaN and infinities as strings so JSON stays standard."""
        data = asdict(self)
        data["verdict"] = self.verdict
        return json_safe(data)


def make_result(
    test_id: int, value: float | None, threshold: float | None, passed: bool | None, details: dict
) -> TestResult:
    """Build a `TestResult` with the standard name and metric of `test_id`."""
    return TestResult(
        test_id=test_id,
        name=TEST_NAMES[test_id],
        metric=TEST_METRICS[test_id],
        value=None if value is None else float(value),
        threshold=None if threshold is None else float(threshold),
        passed=passed,
        details=details,
    )


def not_run(test_id: int, threshold: float | None, reason: str, **details) -> TestResult:
    """Build the NOT RUN result of `test_id`, with `reason` stored in `details["reason"]`."""
    return make_result(test_id, None, threshold, None, {"reason": reason, **details})


def json_safe(value):
    """Return `value` with numpy types as Python types and NaN or infinities as strings, for JSON."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):  # numpy arrays and numpy scalars
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf" or "-inf"
    return value
