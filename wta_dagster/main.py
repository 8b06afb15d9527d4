"""The main job: materialise every asset and partition into the shared Dagster instance.

`dagster asset materialize` takes one partition per call and refuses a selection that mixes
partitioned and unpartitioned assets, so this runs the stages in order through the same
Dagster API, recording every run in the instance under `$DAGSTER_HOME` for the UI to show.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import dagster as dg

from wta_dagster.definitions import defs
from wta_dagster.partitions import subset_partitions

log = logging.getLogger("wta.main")

UNPARTITIONED_FIRST = ["gtzan_dataset", "base_model"]
PARTITIONED = ["loo_subsets", "lora_adapters", "trajectories", "wta_scores"]
UNPARTITIONED_LAST = ["validation_report", "method_comparison"]


def _present(names: list[str]) -> list[str]:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    return [name for name in names if name in keys]


def _run(job, instance: dg.DagsterInstance, selection: list[str], partition_key: str | None) -> None:
    started = time.monotonic()
    label = ", ".join(selection) + (f" [{partition_key}]" if partition_key else "")
    log.info("materialising %s", label)
    result = job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey(name) for name in selection],
        partition_key=partition_key,
        raise_on_error=False,
    )
    if not result.success:
        raise SystemExit(f"materialisation of {label} failed; open the run {result.run_id} in the UI for the log")
    log.info("done %s in %.1f s (run %s)", label, time.monotonic() - started, result.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partition", action="append", default=None,
                        help="materialise only these subset partitions (repeatable); default all")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    valid = subset_partitions.get_partition_keys()
    unknown = [key for key in args.partition or [] if key not in valid]
    if unknown:
        # Checked before any stage runs, because Dagster itself would only report the key as not found.
        raise SystemExit(f"unknown --partition {', '.join(map(repr, unknown))}: not a subset of this dataset "
                         f"and preset; choose from {', '.join(valid) or 'none (check WTA_DATASET)'}")

    instance = dg.DagsterInstance.get()
    job = defs.get_implicit_global_asset_job_def()
    first = _present(UNPARTITIONED_FIRST)
    if first:
        _run(job, instance, first, None)
    partitioned = _present(PARTITIONED)
    if partitioned:
        keys = args.partition or valid
        for key in keys:
            _run(job, instance, partitioned, key)
    last = _present(UNPARTITIONED_LAST)
    if last:
        _run(job, instance, last, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
