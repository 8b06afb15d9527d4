"""Subsets and their LoRA adapters: one controlled training run per subset."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl
import torch

from wta_core.config import RunConfig
from wta_core.data.prepare import ClipSet, genre_prompts, load_clips
from wta_core.errors import ArtifactError
from wta_core.paths import WtaPaths
from wta_core.storage import TableStore
from wta_core.pipeline.user_subsets import user_subset_spec
from wta_core.subsets import USER_PREFIX, SubsetSpec, find_spec, materialise_hint, member_mask, subset_keys
from wta_core.text import PromptEncoder
from wta_core.training import ProgressCallback, TrainResult, train_lora

log = logging.getLogger(__name__)

ADAPTER_SCHEMA = {
    "adapter_id": pl.String, "subset_id": pl.String, "kind": pl.String, "removed_genre": pl.String,
    "fraction": pl.Float64, "seed": pl.Int64, "steps": pl.Int64, "final_loss": pl.Float64,
    "path": pl.String, "sha256": pl.String, "training_seconds": pl.Float64, "device": pl.String,
    "resumed_from_step": pl.Int64, "members": pl.Int64,
}
SUBSET_SCHEMA = {"subset_id": pl.String, "kind": pl.String, "removed_genre": pl.String,
                 "fraction": pl.Float64, "seed": pl.Int64, "members": pl.Int64, "removed": pl.Int64}


@dataclass(frozen=True)
class SubsetPlan:
    """A subset spec with its member mask over the full clip set."""

    spec: SubsetSpec
    clips: ClipSet
    mask: torch.Tensor  # bool [N]
    corrupt: torch.Tensor | None  # bool [N], the noise ablation's corrupted clips


def plan_subset(paths: WtaPaths, config: RunConfig, subset_id: str) -> SubsetPlan:
    """Resolve a partition key, or the adapter id `subset-<name>` of a user subset, against the stored dataset."""
    clips = load_clips(paths)
    genres = sorted(set(clips.genres))
    if subset_id.startswith(USER_PREFIX) and subset_id not in subset_keys(genres, config):
        spec = user_subset_spec(paths, config, subset_id.removeprefix(USER_PREFIX))
    else:
        spec = find_spec(subset_id, genres, config)
    mask = torch.from_numpy(member_mask(spec, clips.genres, seed=config.lora.seed, track_ids=clips.track_ids))
    corrupt = None
    if spec.kind == "noise":
        corrupt = torch.tensor([genre == spec.removed_genre for genre in clips.genres])
    return SubsetPlan(spec=spec, clips=clips, mask=mask, corrupt=corrupt)


def write_subset(paths: WtaPaths, plan: SubsetPlan) -> int:
    """Replace this subset's rows in `subsets` and `subset_members`; return the member count."""
    store = TableStore(paths.database)
    members = [track for track, keep in zip(plan.clips.track_ids, plan.mask.tolist()) if keep]
    frame = pl.DataFrame({"subset_id": [plan.spec.subset_id] * len(members), "track_id": members},
                         schema={"subset_id": pl.String, "track_id": pl.String})
    store.replace_rows("subset_members", frame, {"subset_id": plan.spec.subset_id})
    row = plan.spec.to_row() | {"members": len(members), "removed": len(plan.clips.track_ids) - len(members)}
    store.replace_rows("subsets", pl.DataFrame([row], schema=SUBSET_SCHEMA), {"subset_id": plan.spec.subset_id})
    return len(members)


def clip_prompt_embeddings(clips: ClipSet, dataset: str) -> torch.Tensor:
    """Encode the genre prompt of every clip, [N, 384]."""
    genres = sorted(set(clips.genres))
    prompts = genre_prompts(genres, dataset)
    table = dict(zip(genres, PromptEncoder().encode([prompts[g] for g in genres])))
    return torch.stack([table[genre] for genre in clips.genres])


def ensure_prerequisites(paths: WtaPaths, config: RunConfig, dataset: str) -> list[str]:
    """Build the dataset and the base model when they are missing; return what was built.

    Lets one adapter partition be materialised on a fresh home on its own. The dataset and
    base model assets rebuild the same files when materialised later.
    """
    from wta_core.data.prepare import prepare_dataset
    from wta_core.pipeline.base import ensure_base_model

    built = []
    if not (paths.dataset_dir / "features.safetensors").exists():
        prepare_dataset(dataset, config, paths)
        built.append("dataset")
    if config.model.kind == "embedded" and not paths.base_model_dir.exists():
        ensure_base_model(paths, config)
        built.append("base model")
    return built


def train_subset_adapter(
    paths: WtaPaths,
    config: RunConfig,
    dataset: str,
    subset_id: str,
    device: str = "cpu",
    num_threads: int | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train (or resume) the adapter of `subset_id` and record it in the `adapters` table."""
    plan = plan_subset(paths, config, subset_id)
    write_subset(paths, plan)
    if not paths.base_model_dir.exists():
        raise ArtifactError(f"no base model in {paths.base_model_dir}; materialise the base_model asset first")
    result = train_lora(
        paths.base_model_dir,
        plan.clips.features,
        clip_prompt_embeddings(plan.clips, dataset),
        plan.mask,
        config.lora,
        plan.spec.seed,
        paths.adapter_dir(subset_id),
        paths.checkpoint_dir(subset_id),
        device=device,
        progress=progress,
        noise_corrupt=plan.corrupt,
        num_threads=num_threads,
    )
    record_adapter(paths, plan.spec, result)
    return result


def record_adapter(paths: WtaPaths, spec: SubsetSpec, result: TrainResult) -> None:
    row = {
        "adapter_id": spec.subset_id, "subset_id": spec.subset_id, "kind": spec.kind,
        "removed_genre": spec.removed_genre, "fraction": spec.fraction, "seed": spec.seed,
        "steps": result.steps, "final_loss": result.final_loss, "path": str(result.adapter_folder),
        "sha256": result.sha256, "training_seconds": result.seconds, "device": result.device,
        "resumed_from_step": result.resumed_from_step, "members": result.members,
    }
    TableStore(paths.database).replace_rows(
        "adapters", pl.DataFrame([row], schema=ADAPTER_SCHEMA), {"adapter_id": spec.subset_id})


def adapter_record(paths: WtaPaths, adapter_id: str) -> dict:
    """Return the `adapters` row of `adapter_id`, or raise `ArtifactError` naming the partition to materialise."""
    frame = TableStore(paths.database).read_table("adapters", {"adapter_id": adapter_id})
    if frame.height == 0:
        raise ArtifactError(
            f"adapter {adapter_id!r} is not in the adapters table; materialise {materialise_hint(adapter_id)} first"
        )
    return frame.to_dicts()[0]
