"""The code location: every asset, check and resource, wired once."""

import dagster as dg

from wta_dagster.assets import adapters, comparison, dataset, model, scores, subsets, trajectories, validation
from wta_dagster.compute import TrainingResource
from wta_dagster.resources import WtaSettings

ASSET_MODULES = [dataset, model, subsets, adapters, trajectories, scores, validation, comparison]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES),
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    resources={
        "settings": WtaSettings(),
        # Two threads by default: CPU results depend on the thread count, so a fixed count
        # keeps reruns and resumed trainings bit-identical across machines.
        "training": TrainingResource(num_threads=2),
        "pipes_client": dg.PipesSubprocessClient(),
    },
)
