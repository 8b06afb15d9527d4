"""loo_subsets: the clips each training subset keeps, one partition per subset."""

import dagster as dg

from wta_core.pipeline.adapters import plan_subset, write_subset
from wta_dagster.assets.dataset import gtzan_dataset
from wta_dagster.partitions import subset_partitions
from wta_dagster.resources import WtaSettings


@dg.asset(
    deps=[gtzan_dataset],
    partitions_def=subset_partitions,
    group_name="attribution",
    kinds={"duckdb"},
    description="Members of each training subset (leave-one-genre-out, full, controls, ablations) "
                "in the DuckDB tables `subsets` and `subset_members`.",
)
def loo_subsets(context: dg.AssetExecutionContext, settings: WtaSettings) -> dg.MaterializeResult:
    config = settings.run_config()
    paths = settings.paths()
    plan = plan_subset(paths, config, context.partition_key)
    members = write_subset(paths, plan)
    removed = len(plan.clips.track_ids) - members
    context.log.info(f"subset {plan.spec.subset_id!r} ({plan.spec.kind}): {members} clips kept, {removed} removed")
    return dg.MaterializeResult(metadata={
        "kind": plan.spec.kind,
        "removed_genre": plan.spec.removed_genre or "none",
        "fraction": plan.spec.fraction,
        "training_seed": plan.spec.seed,
        "members": members,
        "removed": removed,
    })
