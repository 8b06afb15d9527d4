"""Partitions: one per training subset.

The built-in keys are computed when the definitions load: the dataset's genres (each a
leave-one-genre-out subset) followed by the reference subsets: the full data, the control
replicates, the dose-response fractions and the noise ablation. Listing genres only reads
folder names, so loading stays fast. User subsets are dynamic partitions of their own.
"""

from __future__ import annotations

import os

import dagster as dg

from wta_core.config import DEFAULT_PRESET, get_preset
from wta_core.data.prepare import dataset_genres
from wta_core.errors import ConfigError
from wta_core.subsets import subset_keys


def _current_keys() -> list[str]:
    preset = os.environ.get("WTA_PRESET") or DEFAULT_PRESET
    try:
        config = get_preset(preset)
    except ConfigError:
        # The dataset asset reports the unknown preset with its full message.
        return []
    genres = dataset_genres(os.environ.get("WTA_DATASET") or "embedded", config)
    return subset_keys(genres, config)


subset_partitions = dg.StaticPartitionsDefinition(_current_keys())

# User subsets, one partition per name, added and deleted by `wta subsets add` and `remove`.
# The keys live in the Dagster instance, so every process that shares $DAGSTER_HOME sees them.
USER_SUBSETS = "user_subsets"
user_subset_partitions = dg.DynamicPartitionsDefinition(name=USER_SUBSETS)


def register_track_subset(instance: dg.DagsterInstance, paths, config, track_id: str, origin: dict):
    """Register (or reuse) the single-track subset of `track_id` and add its `user_subsets` partition.

    A subset registered by this call is removed again if adding the partition fails, so the
    tables never list a subset that the instance lacks. Returns the `UserSubset`.
    """
    from wta_core.pipeline.user_subsets import remove_user_subset, track_subset

    subset, new = track_subset(paths, config, track_id, origin=origin)
    try:
        instance.add_dynamic_partitions(USER_SUBSETS, [subset.name])  # idempotent
    except BaseException:
        if new:
            remove_user_subset(paths, subset.name)
        raise
    return subset
