"""generation_attribution: WTA scores of one user generation under every adapter, set in run config."""

import dagster as dg
import numpy as np
from pydantic import Field

from wta_core.pipeline.attribution import attribute_generation, generation_dir
from wta_dagster.assets.adapters import lora_adapters
from wta_dagster.assets.user_subset_adapters import user_subset_adapters
from wta_dagster.compute import TrainingResource
from wta_dagster.metadata import markdown_table
from wta_dagster.resources import WtaSettings


class GenerationConfig(dg.Config):
    """The generation that `generation_attribution` attributes, as `wta attribute` takes it."""

    prompt: str = Field(description="text prompt of the generation")
    seed: int = Field(default=0, description="seed of the initial noise, 0 or more")
    steps: int = Field(default=0, description="denoising steps; 0 takes the preset's sample.steps")


@dg.asset(
    deps=[lora_adapters, user_subset_adapters],
    group_name="user_subsets",
    kinds={"pytorch", "duckdb"},
    check_specs=[
        dg.AssetCheckSpec("every_adapter_scored", asset="generation_attribution", blocking=True,
                          description="Every adapter but the full one has a score for the generation."),
        dg.AssetCheckSpec("attribution_scores_finite", asset="generation_attribution", blocking=True,
                          description="Every score of the generation is a finite number."),
    ],
    description="Samples the generation set in the run config (prompt, seed, steps) under every adapter "
                "and scores each against the full adapter, calibrated against the controls; rows in "
                "`generations` and `attribution_scores`. Stored scores are reused.",
)
def generation_attribution(context: dg.AssetExecutionContext, config: GenerationConfig, settings: WtaSettings,
                           training: TrainingResource) -> dg.MaterializeResult:
    preset = settings.run_config()
    paths = settings.paths()
    result = attribute_generation(paths, preset, config.prompt, config.seed, config.steps or None,
                                  device=training.resolved_device(), num_threads=training.threads())
    ranked = result.ranked()
    context.log.info(f"generation {result.generation_id}: {len(result.computed)} adapters scored, "
                     f"{len(result.reused)} stored scores reused, in {result.seconds:.1f} s")
    adapters = set(settings.store().read("SELECT adapter_id FROM adapters WHERE adapter_id <> 'full'")
                   ["adapter_id"].to_list())
    scored = set(result.scores["adapter_id"].to_list())
    finite = bool(np.isfinite(result.scores["score"].to_numpy()).all())
    return dg.MaterializeResult(
        metadata={
            "generation_id": result.generation_id,
            "prompt": config.prompt,
            "seed": config.seed,
            "steps": int(result.generation["steps"]),
            "computed": len(result.computed),
            "reused": len(result.reused),
            "target": result.target,
            "calibration": result.calibration(),
            "trajectories": dg.MetadataValue.path(str(generation_dir(paths, result.generation_id))),
            "ranking": markdown_table(ranked.select(["adapter_id", "kind", "removed", "score", "z_score",
                                                     "p_value"]).to_dicts()),
        },
        check_results=[
            dg.AssetCheckResult(check_name="every_adapter_scored", passed=adapters <= scored,
                                metadata={"adapters": len(adapters), "missing": ", ".join(sorted(adapters - scored))
                                          or "none"}),
            dg.AssetCheckResult(check_name="attribution_scores_finite", passed=finite,
                                metadata={"rows": result.scores.height}),
        ],
    )
