"""validation_report: the eleven validation tests, each also a non-blocking asset check."""

import json

import dagster as dg

from wta_core.pipeline.validation_run import validate_run
from wta_core.validation.result import TEST_NAMES
from wta_dagster.assets.scores import wta_scores
from wta_dagster.metadata import image, markdown_table
from wta_dagster.resources import WtaSettings


def check_name(test_id: int) -> str:
    """Asset check name of a test, e.g. `t07_permutation_test`."""
    slug = "".join(c if c.isalnum() else "_" for c in TEST_NAMES[test_id].lower()).strip("_")
    while "__" in slug:
        slug = slug.replace("__", "_")
    return f"t{test_id:02d}_{slug}"


CHECK_SPECS = [
    dg.AssetCheckSpec(check_name(test_id), asset="validation_report", blocking=False,
                      description=f"Validation test {test_id}: {name}. A test that could not run is "
                                  "reported as failed with severity WARN and verdict NOT RUN.")
    for test_id, name in TEST_NAMES.items()
]


@dg.asset(
    deps=[wta_scores],
    group_name="attribution",
    kinds={"duckdb"},
    check_specs=CHECK_SPECS,
    description="The eleven validation tests with their metrics, thresholds and verdicts "
                "(`validation_results`), and the report as JSON and Markdown under $WTA_HOME/reports.",
)
def validation_report(context: dg.AssetExecutionContext, settings: WtaSettings):
    config = settings.run_config()
    paths = settings.paths()
    results, files = validate_run(paths, config, settings.dataset_name())
    counts = {"PASS": 0, "FAIL": 0, "NOT RUN": 0}
    for result in results:
        counts[result.verdict] += 1
        context.log.info(f"test {result.test_id} {result.name}: {result.verdict} "
                         f"(value {result.value}, threshold {result.threshold})")
    metadata = {
        "passed": counts["PASS"], "failed": counts["FAIL"], "not_run": counts["NOT RUN"],
        "results": markdown_table([{"id": r.test_id, "name": r.name, "metric": r.metric,
                                    "value": "" if r.value is None else f"{r.value:.4g}",
                                    "threshold": r.threshold, "verdict": r.verdict} for r in results]),
        "report_markdown": dg.MetadataValue.path(str(files.get("markdown", paths.report_dir))),
    }
    for name, path in files.items():
        if str(path).endswith(".png"):
            metadata[f"plot_{name}"] = image(path)
    yield dg.MaterializeResult(metadata=metadata)
    for result in results:
        details = json.dumps(result.details, default=str)[:2000]
        yield dg.AssetCheckResult(
            check_name=check_name(result.test_id),
            passed=bool(result.passed),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"metric": result.metric, "value": result.value if result.value is not None else "none",
                      "threshold": result.threshold if result.threshold is not None else "none",
                      "verdict": result.verdict, "details": details},
        )
