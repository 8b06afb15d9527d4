"""The code location: every asset, check and resource, wired once."""

from __future__ import annotations

import dagster as dg

from wta_dagster.assets import dataset
from wta_dagster.resources import WtaSettings

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([dataset]),
    asset_checks=dg.load_asset_checks_from_modules([dataset]),
    resources={"settings": WtaSettings()},
)
