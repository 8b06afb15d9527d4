"""Dagster code location of WTA; `defs` holds every asset, check and resource."""

from wta_dagster.definitions import defs

__all__ = ["defs"]
