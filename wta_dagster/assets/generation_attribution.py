"""generation_attribution: WTA scores of one user generation under every adapter, set in run config."""

import dagster as dg
import numpy as np
from pydantic import Field

from wta_core.errors import ConfigError
from wta_core.pipeline.attribution import SCREENS, Attribution, attribute_generation, generation_dir, screen_tracks
from wta_dagster.assets.adapters import lora_adapters
from wta_dagster.assets.user_subset_adapters import user_subset_adapters
from wta_dagster.compute import TrainingResource
from wta_dagster.metadata import markdown_table
from wta_dagster.partitions import register_track_subset
from wta_dagster.resources import WtaSettings

USER_SUBSET_ASSETS = "user_subset_adapters, user_subset_trajectories and user_subset_scores"


class GenerationConfig(dg.Config):
    """The generation that `generation_attribution` attributes, as `wta attribute` takes it."""

    prompt: str = Field(description="text prompt of the generation")
    seed: int = Field(default=0, description="seed of the initial noise, 0 or more")
    steps: int = Field(default=0, description="denoising steps; 0 takes the preset's sample.steps")
    screen: int = Field(default=0, ge=0, description="training tracks to screen as single-track removal candidates; "
                                               "0 screens none")
    screen_by: str = Field(default=SCREENS[0], description="similarity that ranks the candidates: "
                                                           + " or ".join(SCREENS))


def screen_candidates(context: dg.AssetExecutionContext, config: GenerationConfig, settings: WtaSettings,
                      training: TrainingResource, result: Attribution) -> dict:
    """Rank the training tracks, register the top `config.screen` as single-track subsets, and report them.

    An asset cannot launch other runs, so a candidate without a score is left for the user to
    materialise (its partition exists once this returns), and a later materialisation of this
    asset with the same config reports its score.
    """
    if config.screen_by not in SCREENS:
        raise ConfigError(f"screen_by is {config.screen_by!r}; choose one of {', '.join(SCREENS)}")
    paths = settings.paths()
    preset = settings.run_config()
    candidates, total, score_name = screen_tracks(
        paths, preset, result.generation_id, config.screen, by=config.screen_by, prompt=config.prompt,
        dataset=settings.dataset_name(), num_threads=training.threads())
    scores = {row["adapter_id"]: row for row in result.ranked().iter_rows(named=True)}
    rows, untested = [], []
    for candidate in candidates:
        subset = register_track_subset(context.instance, paths, preset, candidate.track_id,
                                       origin={"screened_for": result.generation_id})
        score = scores.get(subset.adapter_id)
        if score is None:
            untested.append(subset.name)
        rows.append({"rank": candidate.rank, "track_id": candidate.track_id, "genre": candidate.genre,
                     "similarity": round(candidate.similarity, 4), "partition": subset.name,
                     "score": None if score is None else score["score"],
                     "z_score": None if score is None else score["z_score"],
                     "p_value": None if score is None else score["p_value"]})
    if untested:
        context.log.info(f"screening: materialise {USER_SUBSET_ASSETS} for the partitions {', '.join(untested)}, "
                         "then materialise generation_attribution again with the same config to score them")
    return {
        "screen_score": score_name,
        "screen_candidates": markdown_table(rows),
        "screen_untested_partitions": ", ".join(untested) or "none",
        "screen_note": (f"Only these {len(candidates)} of {total} tracks are candidates; the other "
                        f"{total - len(candidates)} were not tested, so their effect on this generation is "
                        "unknown, not zero."),
    }


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
                "`generations` and `attribution_scores`. Stored scores are reused. With `screen` K > 0, it "
                "also ranks the training tracks by `screen_by` similarity and registers the top K as "
                "single-track user subsets; materialise their partitions, then this asset again, for "
                "their scores.",
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
    screening = screen_candidates(context, config, settings, training, result) if config.screen > 0 else {}
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
            **screening,
        },
        check_results=[
            dg.AssetCheckResult(check_name="every_adapter_scored", passed=adapters <= scored,
                                metadata={"adapters": len(adapters), "missing": ", ".join(sorted(adapters - scored))
                                          or "none"}),
            dg.AssetCheckResult(check_name="attribution_scores_finite", passed=finite,
                                metadata={"rows": result.scores.height}),
        ],
    )
