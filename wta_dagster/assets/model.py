"""base_model: the embedded denoiser pretrained on the pretraining portion of the corpus."""

import dagster as dg

from wta_dagster.assets.dataset import gtzan_dataset
from wta_dagster.compute import TrainingResource, progress_logger
from wta_dagster.metadata import image
from wta_dagster.resources import WtaSettings
from wta_core.pipeline.base import ensure_base_model
from wta_core.plots import curves


@dg.asset(
    deps=[gtzan_dataset],
    group_name="attribution",
    kinds={"pytorch", "safetensors"},
    pool="training",
    description="The base StableAudioDiTModel, pretrained on clips never used for attribution.",
)
def base_model(context: dg.AssetExecutionContext, settings: WtaSettings,
               training: TrainingResource) -> dg.MaterializeResult:
    config = settings.run_config()
    paths = settings.paths()
    context.log.info(f"base model: {config.base.steps} steps, batch {config.base.batch_size}, "
                     f"device {training.resolved_device()}")
    info = ensure_base_model(paths, config, progress=progress_logger(context, "base model", config.base.steps))
    if info.reused:
        context.log.info(f"reusing the base model in {info.folder}")
    figure = curves({"loss": info.losses}, "step", "loss", "base model pretraining loss",
                    paths.base_model_dir.parent / "base_model_loss.png")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(info.folder)),
        "parameters": info.parameters,
        "final_loss": info.final_loss,
        "steps": info.steps,
        "training_seconds": round(info.seconds, 1),
        "reused": info.reused,
        "loss_curve": image(figure),
    })
