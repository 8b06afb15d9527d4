"""trajectories: every adapter samples every genre prompt from the same seeds, steps and noise."""

import dagster as dg
import torch

from wta_core.pipeline.generation import generate_trajectories, render_final_states
from wta_dagster.assets.adapters import lora_adapters
from wta_dagster.compute import TrainingResource
from wta_dagster.metadata import image
from wta_dagster.partitions import subset_partitions
from wta_dagster.resources import WtaSettings


@dg.asset(
    deps=[lora_adapters],
    partitions_def=subset_partitions,
    group_name="attribution",
    kinds={"pytorch", "safetensors"},
    description="Latent and predicted clean states after every denoising step, per prompt and seed; "
                "index rows in the DuckDB table `trajectories`, audio of each prompt's final state.",
)
def trajectories(context: dg.AssetExecutionContext, settings: WtaSettings,
                 training: TrainingResource) -> dg.MaterializeResult:
    return sample_adapter_trajectories(context, settings, training, context.partition_key)


def sample_adapter_trajectories(context: dg.AssetExecutionContext, settings: WtaSettings,
                                training: TrainingResource, adapter_id: str) -> dg.MaterializeResult:
    """Sample, store and render the genre-prompt trajectories of one adapter; shared with the user subsets."""
    config = settings.run_config()
    paths = settings.paths()
    device = training.resolved_device()
    threads = training.threads()
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        stored = generate_trajectories(paths, config, settings.dataset_name(), adapter_id, device=device)
    finally:
        torch.set_num_threads(previous)
    outputs = render_final_states(paths, config, stored)
    context.log.info(f"trajectories of {adapter_id!r}: {len(stored.genres)} prompts x {len(stored.seeds)} seeds "
                     f"x {stored.timesteps.numel()} steps in {stored.path}")
    audio = {f"audio_{genre}": dg.MetadataValue.path(str(path)) for genre, path in outputs.items()
             if genre != "spectrograms"}
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(stored.path)),
        "prompts": len(stored.genres),
        "seeds": str(stored.seeds),
        "steps": int(stored.timesteps.numel()),
        "latent_shape": str(list(stored.latents.shape[-2:])),
        "stored_dtype": config.sample.store_dtype,
        "bytes": stored.path.stat().st_size,
        "final_states": image(outputs["spectrograms"]),
        **audio,
    })
