"""Training subsets of one run: leave-one-genre-out, full data, controls, ablations and user subsets.

A subset is the full training set with some clips removed (or, for the noise ablation,
replaced by corrupted copies). Every subset of a run keeps the full set's clip order, so a
training run differs from the full one only in the data it was given. User subsets are
named lists of tracks registered with `wta subsets add`; their adapter id is
`subset-<name>` (see `wta_core.pipeline.user_subsets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wta_core.config import RunConfig
from wta_core.errors import ConfigError

FULL = "full"
USER_PREFIX = "subset-"  # adapter id of a user subset: this prefix and the subset's name
# Substrings that Dagster 1.13 rejects in partition keys. Each genre name becomes a partition key.
NOT_IN_PARTITION_KEYS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")


@dataclass(frozen=True)
class SubsetSpec:
    """Training data of one partition: the subset's kind, removed genre, share and seed."""

    subset_id: str
    kind: str  # full | loo | control | dose | noise | user
    removed_genre: str | None
    fraction: float  # share of `removed_genre`'s clips removed (or corrupted for noise); 1.0 for user
    seed: int  # training seed
    removed_tracks: tuple[str, ...] = ()  # user subsets only: the track ids left out

    def to_row(self) -> dict:
        return {"subset_id": self.subset_id, "kind": self.kind, "removed_genre": self.removed_genre,
                "fraction": self.fraction, "seed": self.seed}


def ablation_genre(genres: list[str], config: RunConfig) -> str:
    """Return the genre used by the dose-response and noise ablations."""
    chosen = config.lora.ablation_genre or sorted(genres)[0]
    if chosen not in genres:
        raise ConfigError(f"lora.ablation_genre {chosen!r} is not a dataset genre; choose one of {sorted(genres)}")
    return chosen


def subset_specs(genres: list[str], config: RunConfig) -> list[SubsetSpec]:
    """List every subset of a run: full, controls, one per genre, dose fractions and noise."""
    if not genres:
        return []
    reserved = {FULL, "noise"} | {f"control-{s}" for s in config.lora.control_seeds}
    clashes = sorted(reserved & set(genres))
    if clashes:
        raise ConfigError(f"genre names {clashes} clash with reserved subset names; rename those genre folders")
    unusable = sorted(genre for genre in genres if any(part in genre for part in NOT_IN_PARTITION_KEYS))
    if unusable:
        raise ConfigError(f"genre names {unusable} cannot be partition keys because they contain '...' or a "
                          "control character; rename those genre folders")
    seed = config.lora.seed
    # The full adapter and the controls come first: every other subset is scored against
    # the full adapter and calibrated against the controls.
    specs = [SubsetSpec(FULL, "full", None, 0.0, seed)]
    for control_seed in config.lora.control_seeds:
        if control_seed == seed:
            raise ConfigError(f"lora.control_seeds must differ from lora.seed ({seed}); got {control_seed}")
        specs.append(SubsetSpec(f"control-{control_seed}", "control", None, 0.0, control_seed))
    specs += [SubsetSpec(genre, "loo", genre, 1.0, seed) for genre in sorted(genres)]
    target = ablation_genre(genres, config)
    for fraction in config.lora.dose_fractions:
        specs.append(SubsetSpec(f"dose-{round(fraction * 100):02d}", "dose", target, fraction, seed))
    specs.append(SubsetSpec("noise", "noise", target, 1.0, seed))
    return specs


def subset_keys(genres: list[str], config: RunConfig) -> list[str]:
    return [spec.subset_id for spec in subset_specs(genres, config)]


def find_spec(subset_id: str, genres: list[str], config: RunConfig) -> SubsetSpec:
    """Return the spec called `subset_id`, or raise `ConfigError` naming the valid ones."""
    for spec in subset_specs(genres, config):
        if spec.subset_id == subset_id:
            return spec
    raise ConfigError(
        f"partition {subset_id!r} is not a subset of this dataset; valid partitions: "
        f"{subset_keys(genres, config)}"
    )


def materialise_hint(adapter_id: str, stage: str = "adapters") -> str:
    """Name the asset and partition that produce `adapter_id`'s `stage`, for error messages.

    `stage` is adapters, trajectories or scores. A user subset's outputs come from the
    `user_subset_*` assets.
    """
    if adapter_id.startswith(USER_PREFIX):
        return f"user_subset_{stage} for partition {adapter_id.removeprefix(USER_PREFIX)!r}"
    asset = {"adapters": "lora_adapters", "trajectories": "trajectories", "scores": "wta_scores"}[stage]
    return f"{asset} for partition {adapter_id!r}"


def user_adapter_id(name: str) -> str:
    """Adapter (and subset) id of the user subset called `name`."""
    return USER_PREFIX + name


def member_mask(spec: SubsetSpec, clip_genres: list[str], seed: int = 0,
                track_ids: list[str] | None = None) -> np.ndarray:
    """Boolean [N]: which clips of the full set this subset trains on.

    Dose subsets remove a seeded, nested share of the genre: the clips removed at 25% are
    also removed at 50% and 75%. User subsets remove their `removed_tracks`, which needs
    `track_ids`, the clips' track ids in the same order as `clip_genres`.
    """
    genres = np.asarray(clip_genres)
    mask = np.ones(len(genres), dtype=bool)
    if spec.kind == "user":
        if track_ids is None or len(track_ids) != len(genres):
            raise ValueError(f"user subset {spec.subset_id!r} needs one track id per clip to build its mask")
        removed = set(spec.removed_tracks)
        mask &= np.array([track not in removed for track in track_ids], dtype=bool)
    elif spec.kind == "loo":
        mask &= genres != spec.removed_genre
    elif spec.kind == "dose":
        indices = np.flatnonzero(genres == spec.removed_genre)
        order = np.random.default_rng(seed).permutation(indices)
        mask[order[: int(round(spec.fraction * len(indices)))]] = False
    return mask

