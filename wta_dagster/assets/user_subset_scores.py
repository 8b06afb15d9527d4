"""user_subset_scores: WTA scores of each user subset's adapter against the full one."""

import dagster as dg

from wta_core.subsets import user_adapter_id
from wta_dagster.assets.scores import score_partition, wta_scores
from wta_dagster.assets.trajectories import trajectories
from wta_dagster.assets.user_subset_trajectories import user_subset_trajectories
from wta_dagster.partitions import user_subset_partitions
from wta_dagster.resources import WtaSettings


@dg.asset(
    # The full partition's trajectories are the reference and the controls' scores the noise
    # floor; Dagster has no mapping from some genre partitions to a dynamic key, so all are named.
    deps=[user_subset_trajectories,
          dg.AssetDep(trajectories, partition_mapping=dg.AllPartitionMapping()),
          dg.AssetDep(wta_scores, partition_mapping=dg.AllPartitionMapping())],
    partitions_def=user_subset_partitions,
    group_name="user_subsets",
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec("scores_finite", asset="user_subset_scores", blocking=True,
                          description="Every score of the partition is a finite number."),
        dg.AssetCheckSpec("every_prompt_scored", asset="user_subset_scores", blocking=True,
                          description="Every prompt and seed of the partition has a score."),
    ],
    description="Per-step distances and WTA scores of adapter `subset-<name>` against the full adapter, "
                "calibrated against the control replicates (rows in `step_distances` and `wta_scores`, "
                "kind `user`).",
)
def user_subset_scores(context: dg.AssetExecutionContext, settings: WtaSettings) -> dg.MaterializeResult:
    return score_partition(context, settings, user_adapter_id(context.partition_key))
