"""user_subset_trajectories: the genre-prompt trajectories of each user subset's adapter."""

import dagster as dg

from wta_core.subsets import user_adapter_id
from wta_dagster.assets.trajectories import sample_adapter_trajectories
from wta_dagster.assets.user_subset_adapters import user_subset_adapters
from wta_dagster.compute import TrainingResource
from wta_dagster.partitions import user_subset_partitions
from wta_dagster.resources import WtaSettings


@dg.asset(
    deps=[user_subset_adapters],
    partitions_def=user_subset_partitions,
    group_name="user_subsets",
    kinds={"pytorch", "safetensors"},
    description="Trajectories of adapter `subset-<name>` for every genre prompt and seed, sampled like "
                "the genre partitions' (`trajectories/subset-<name>.safetensors`, rows in `trajectories`).",
)
def user_subset_trajectories(context: dg.AssetExecutionContext, settings: WtaSettings,
                             training: TrainingResource) -> dg.MaterializeResult:
    return sample_adapter_trajectories(context, settings, training, user_adapter_id(context.partition_key))
