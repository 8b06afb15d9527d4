"""user_subset_adapters: the LoRA adapter trained without one user subset's tracks."""

import dagster as dg

from wta_core.subsets import user_adapter_id
from wta_dagster.assets.adapters import train_adapter
from wta_dagster.assets.model import base_model
from wta_dagster.compute import TrainingResource
from wta_dagster.partitions import user_subset_partitions
from wta_dagster.resources import WtaSettings


@dg.asset(
    deps=[base_model],
    partitions_def=user_subset_partitions,
    group_name="user_subsets",
    kinds={"pytorch", "safetensors"},
    pool="training",
    description="LoRA adapter `subset-<name>` of each user subset, trained like the genre adapters "
                "(same initialisation, steps, data order and seed as the full adapter, the subset's "
                "tracks skipped); rows in the DuckDB tables `adapters`, `subsets` and `subset_members`.",
)
def user_subset_adapters(context: dg.AssetExecutionContext, settings: WtaSettings, training: TrainingResource,
                         pipes_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    return train_adapter(context, settings, training, pipes_client, user_adapter_id(context.partition_key))
