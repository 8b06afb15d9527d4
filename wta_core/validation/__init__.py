"""The eleven validation tests of WTA scores, their Bradford Hill summary and the report.

Every function is pure: it reads a run's outputs that the caller passes in and returns
`TestResult`s. Tests 1 and 2 build their own synthetic model. Nothing here imports Dagster.
"""

from wta_core.validation.ablation import dose_response_test, noise_isolation_test
from wta_core.validation.granger import granger_causality_test, switch_lag_test
from wta_core.validation.loo import independence_test, loo_top1_test, proximity_test
from wta_core.validation.permutation import effect_size_test, permutation_test
from wta_core.validation.report import bradford_hill, write_report
from wta_core.validation.result import TEST_NAMES, TestResult
from wta_core.validation.scm import (
    ScmRun,
    ScmSpec,
    false_positive_test,
    parent_recovery_test,
    run_scm,
    scm_tests,
    switched_divergence_curves,
)
from wta_core.validation.suite import ValidationInputs, run_all

__all__ = [
    "TEST_NAMES",
    "ScmRun",
    "ScmSpec",
    "TestResult",
    "ValidationInputs",
    "bradford_hill",
    "dose_response_test",
    "effect_size_test",
    "false_positive_test",
    "granger_causality_test",
    "independence_test",
    "loo_top1_test",
    "noise_isolation_test",
    "parent_recovery_test",
    "permutation_test",
    "proximity_test",
    "run_all",
    "run_scm",
    "scm_tests",
    "switch_lag_test",
    "switched_divergence_curves",
    "write_report",
]
