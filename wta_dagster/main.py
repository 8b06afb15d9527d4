"""The main job: materialise every asset and partition into the shared Dagster instance.

`dagster asset materialize` takes one partition per call and refuses any selection with a
partitioned asset unless `--partition` is given, so this runs the stages in order through the
same Dagster API, recording every run in the instance under `$DAGSTER_HOME` for the UI to show.

Stages, in order:

1. `gtzan_dataset` and `base_model`, in this process.
2. `loo_subsets`, `lora_adapters` and `trajectories` of every subset partition, one run per
   partition, `--workers` runs at a time in worker processes. Training only needs the base
   model, so partitions are independent here.
3. `wta_scores` of every partition, in this process: the full adapter first (every score is a
   distance to its trajectories), then the control replicates (they calibrate the others).
4. `validation_report` and `method_comparison`, in this process.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import dagster as dg

from wta_dagster.definitions import defs
from wta_dagster.partitions import subset_partitions
from wta_core.subsets import FULL

log = logging.getLogger("wta.main")

UNPARTITIONED_FIRST = ["gtzan_dataset", "base_model"]
PARTITIONED = ["loo_subsets", "lora_adapters", "trajectories"]
SCORING = ["wta_scores"]
UNPARTITIONED_LAST = ["validation_report", "method_comparison"]


def _present(names: list[str]) -> list[str]:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    return [name for name in names if name in keys]


def _label(selection: list[str], partition_key: str | None) -> str:
    return ", ".join(selection) + (f" [{partition_key}]" if partition_key else "")


def _execute(selection: list[str], partition_key: str | None) -> tuple[bool, str, float]:
    """Materialise `selection` (of one partition) as one run; return success, run id and seconds."""
    started = time.monotonic()
    log.info("materialising %s", _label(selection, partition_key))
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.get(),
        asset_selection=[dg.AssetKey(name) for name in selection],
        partition_key=partition_key,
        raise_on_error=False,
    )
    return result.success, result.run_id, time.monotonic() - started


def _failure(label: str, run_id: str) -> str:
    return f"materialisation of {label} failed; open the run {run_id} in the UI for the log"


def _run(selection: list[str], partition_key: str | None) -> None:
    label = _label(selection, partition_key)
    success, run_id, seconds = _execute(selection, partition_key)
    if not success:
        raise SystemExit(_failure(label, run_id))
    log.info("done %s in %.1f s (run %s)", label, seconds, run_id)


def _run_parallel(selection: list[str], keys: list[str], workers: int) -> None:
    """Materialise `selection` once per partition key, `workers` runs at a time, even when one fails."""
    failures = []
    if workers == 1:
        for key in keys:
            success, run_id, seconds = _execute(selection, key)
            if success:
                log.info("done %s in %.1f s (run %s)", _label(selection, key), seconds, run_id)
            else:
                failures.append(_failure(_label(selection, key), run_id))
        if failures:
            raise SystemExit("\n".join(failures))
        return
    # Spawned workers start clean: forking after torch and Dagster have started threads is unsafe.
    # Each worker reads the same environment (WTA_HOME, WTA_PRESET, DAGSTER_HOME) as this process.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_configure_logging) as pool:
        pending: dict[Future, str] = {pool.submit(_execute, selection, key): key for key in keys}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                key = pending.pop(future)
                label = _label(selection, key)
                try:
                    success, run_id, seconds = future.result()
                except Exception as error:  # a worker that died records no run
                    failures.append(f"materialisation of {label} failed in its worker process: {error}")
                    continue
                if success:
                    log.info("done %s in %.1f s (run %s)", label, seconds, run_id)
                else:
                    failures.append(_failure(label, run_id))
    if failures:
        raise SystemExit("\n".join(failures))


def default_workers() -> int:
    """Partitions trained at once, as the `training` resource's `parallel_workers` counts them."""
    return defs.resources["training"].parallel_workers()


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def scoring_order(keys: list[str]) -> list[str]:
    """Order partition keys for scoring: the full partition, the controls, then the rest as given."""
    controls = [key for key in keys if key.startswith("control-")]
    return [key for key in keys if key == FULL] + controls + [key for key in keys if key != FULL and key not in controls]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partition", action="append", default=None,
                        help="materialise only these subset partitions (repeatable); default all")
    parser.add_argument("--workers", type=int, default=None,
                        help="partitions trained at once, each in its own process (default: CPU cores "
                             "over the training resource's threads, or 1 on an accelerator)")
    args = parser.parse_args(argv)
    _configure_logging()
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"--workers must be 1 or more, not {args.workers}")

    valid = subset_partitions.get_partition_keys()
    unknown = [key for key in args.partition or [] if key not in valid]
    if unknown:
        # Checked before any stage runs, because Dagster itself would only report the key as not found.
        raise SystemExit(f"unknown --partition {', '.join(map(repr, unknown))}: not a subset of this dataset "
                         f"and preset; choose from {', '.join(valid) or 'none (check WTA_DATASET)'}")

    first = _present(UNPARTITIONED_FIRST)
    if first:
        _run(first, None)
    keys = scoring_order(args.partition or valid)
    partitioned = _present(PARTITIONED)
    if partitioned and keys:
        workers = min(args.workers or default_workers(), len(keys))
        log.info("training and sampling %d partitions, %d at a time", len(keys), workers)
        _run_parallel(partitioned, keys, workers)
    scoring = _present(SCORING)
    for key in keys if scoring else []:
        _run(scoring, key)
    last = _present(UNPARTITIONED_LAST)
    if last:
        _run(last, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
