"""lora_adapters: one LoRA adapter per subset partition, in the standard PEFT format."""

import dagster as dg

from wta_core.pipeline.adapters import ensure_prerequisites, train_subset_adapter
from wta_core.plots import curves
from wta_core.subsets import FULL
from wta_dagster.assets.model import base_model
from wta_dagster.assets.subsets import loo_subsets
from wta_dagster.compute import TrainingResource, progress_logger, run_training_in_pipes
from wta_dagster.metadata import image
from wta_dagster.partitions import subset_partitions
from wta_dagster.resources import WtaSettings


@dg.asset(
    deps=[base_model, loo_subsets],
    partitions_def=subset_partitions,
    group_name="attribution",
    kinds={"pytorch", "safetensors"},
    pool="training",
    description="LoRA adapter of each subset (adapter_config.json + adapter_model.safetensors); "
                "rows in the DuckDB table `adapters`.",
)
def lora_adapters(context: dg.AssetExecutionContext, settings: WtaSettings, training: TrainingResource,
                  pipes_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    return train_adapter(context, settings, training, pipes_client, context.partition_key)


def train_adapter(context: dg.AssetExecutionContext, settings: WtaSettings, training: TrainingResource,
                  pipes_client: dg.PipesSubprocessClient, subset_id: str) -> dg.MaterializeResult:
    """Train (or resume) the adapter of `subset_id` and describe it as materialisation metadata.

    Shared by the genre partitions and the user subsets, whose adapter id is `subset-<name>`.
    """
    config = settings.run_config()
    paths = settings.paths()
    device = training.resolved_device()
    context.log.info(f"training adapter {subset_id!r}: {config.lora.steps} steps, batch {config.lora.batch_size}, "
                     f"rank {config.lora.rank}, device {device}, launcher {training.launcher}")
    built = ensure_prerequisites(paths, config, settings.dataset_name())
    if built:
        context.log.warning(f"built the missing {' and '.join(built)} first; materialise gtzan_dataset and "
                            "base_model to record them in the asset catalog")
    if training.launcher == "pipes":
        outcome = run_training_in_pipes(context, pipes_client, settings, training, subset_id)
        losses = outcome.pop("losses")
    else:
        result = train_subset_adapter(paths, config, settings.dataset_name(), subset_id, device=device,
                                      num_threads=training.threads(),
                                      progress=progress_logger(context, subset_id, config.lora.steps))
        outcome = {"final_loss": result.final_loss, "steps": result.steps, "seconds": result.seconds,
                   "sha256": result.sha256, "device": result.device,
                   "resumed_from_step": result.resumed_from_step, "members": result.members,
                   "adapter_folder": result.adapter_folder}
        losses = result.losses
    if outcome["resumed_from_step"]:
        context.log.info(f"resumed {subset_id!r} from its checkpoint at step {outcome['resumed_from_step']}")
    context.log.info(f"adapter {subset_id!r} done: final loss {outcome['final_loss']:.4f} "
                     f"in {outcome['seconds']:.1f} s")
    figure = curves({subset_id: losses}, "optimizer step", "loss", f"LoRA training loss, {subset_id}",
                    paths.adapter_dir(subset_id).parent / f"{subset_id}.loss.png")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(outcome["adapter_folder"])),
        "final_loss": float(outcome["final_loss"]),
        "steps": int(outcome["steps"]),
        "training_seconds": round(float(outcome["seconds"]), 2),
        "device": str(outcome["device"]),
        "sha256": str(outcome["sha256"]),
        "resumed_from_step": int(outcome["resumed_from_step"]),
        "members": int(outcome["members"]),
        "reference": subset_id == FULL,
        "loss_curve": image(figure),
    })

