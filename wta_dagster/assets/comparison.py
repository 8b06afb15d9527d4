"""method_comparison: WTA against embedding similarity, TracIn-LoRA and destination-only retraining."""

import dagster as dg

from wta_core.pipeline.comparison_run import compare_run
from wta_dagster.assets.scores import wta_scores
from wta_dagster.compute import TrainingResource, progress_logger
from wta_dagster.metadata import image
from wta_dagster.resources import WtaSettings


@dg.asset(
    deps=[wta_scores],
    group_name="comparison",
    kinds={"duckdb", "pytorch"},
    pool="training",
    description="Each attribution method's agreement with leave-one-genre-out retraining, its linear "
                "datamodeling score and its cost (`method_comparison`), with a plot and a Markdown table.",
)
def method_comparison(context: dg.AssetExecutionContext, settings: WtaSettings,
                      training: TrainingResource) -> dg.MaterializeResult:
    config = settings.run_config()
    paths = settings.paths()
    context.log.info(f"comparing methods; {config.lds_subsets} half-subset adapters for the LDS")
    outcome = compare_run(paths, config, settings.dataset_name(),
                          progress=progress_logger(context, "LDS adapter", config.lora.steps),
                          num_threads=training.threads(), clap_weights=settings.clap_weights_path(),
                          workers=training.parallel_workers())
    return dg.MaterializeResult(metadata={
        "rows": len(outcome.rows),
        "lds_subsets": outcome.lds_subsets,
        "table": dg.MetadataValue.md(outcome.markdown),
        "plot": image(outcome.plot),
    })
