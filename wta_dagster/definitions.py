"""The code location: every asset, check and resource, wired once."""

import dagster as dg

from wta_dagster.assets import (
    adapters,
    comparison,
    dataset,
    generation_attribution,
    model,
    scores,
    subsets,
    trajectories,
    user_subset_adapters,
    user_subset_scores,
    user_subset_trajectories,
    validation,
)
from wta_dagster.compute import TrainingResource
from wta_dagster.resources import WtaSettings

ASSET_MODULES = [dataset, model, subsets, adapters, trajectories, scores, validation, comparison,
                 user_subset_adapters, user_subset_trajectories, user_subset_scores, generation_attribution]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES),
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    resources={
        "settings": WtaSettings(),
        # One thread by default: CPU results depend on the thread count, so a fixed count keeps
        # reruns and resumed trainings bit-identical across machines, and one thread per step
        # stays fast when parallel partitions share the cores (two threads each slowed a
        # training step about tenfold on a loaded 2-core machine).
        "training": TrainingResource(num_threads=1),
        "pipes_client": dg.PipesSubprocessClient(),
    },
)
