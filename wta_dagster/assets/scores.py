"""wta_scores: per-step distances and calibrated WTA scores of each adapter against the full one."""

import dagster as dg
import numpy as np
import polars as pl

from wta_core.pipeline.scoring import score_adapter
from wta_core.plots import curves, heatmap
from wta_core.subsets import FULL
from wta_dagster.assets.trajectories import trajectories
from wta_dagster.metadata import image, markdown_table
from wta_dagster.partitions import subset_partitions
from wta_dagster.resources import WtaSettings

TOP_ROWS = 15


@dg.asset(
    deps=[trajectories],
    partitions_def=subset_partitions,
    group_name="attribution",
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec("scores_finite", asset="wta_scores", blocking=True,
                          description="Every score of the partition is a finite number."),
        dg.AssetCheckSpec("every_prompt_scored", asset="wta_scores", blocking=True,
                          description="Every prompt and seed of the partition has a score."),
    ],
    description="Per-step Wasserstein distances (`step_distances`) and WTA scores with z-scores and "
                "p-values against the control noise floor (`wta_scores`, view `score_summary`). "
                "Reads the full partition's trajectories as the reference.",
)
def wta_scores(context: dg.AssetExecutionContext, settings: WtaSettings):
    # Both calls check the settings, also for the reference partition: an unknown preset, or a
    # home that holds another preset's run, raises here.
    settings.run_config()
    settings.paths()
    adapter_id = context.partition_key
    if adapter_id == FULL:
        context.log.info("the full adapter is the reference; its scores against itself are not stored")
        yield dg.MaterializeResult(metadata={"reference": True}, check_results=[
            dg.AssetCheckResult(check_name="scores_finite", passed=True, metadata={"rows": 0}),
            dg.AssetCheckResult(check_name="every_prompt_scored", passed=True, metadata={"rows": 0}),
        ])
        return
    yield score_partition(context, settings, adapter_id)


def score_partition(context: dg.AssetExecutionContext, settings: WtaSettings,
                    adapter_id: str) -> dg.MaterializeResult:
    """Score one adapter against the full one and return the result with its two check results.

    Shared with the user subsets. The checks are named `scores_finite` and `every_prompt_scored`
    on whichever asset calls this.
    """
    config = settings.run_config()
    paths = settings.paths()
    scores = score_adapter(paths, config, adapter_id)
    store = settings.store()
    chosen = scores.filter(pl.col("target") == config.score.target)
    finite = bool(np.isfinite(scores["score"].to_numpy()).all())
    expected = len(set(scores["prompt"].to_list())) * len(config.sample.seeds)
    context.log.info(f"scored {adapter_id!r}: {chosen.height} scores ({config.score.target}), "
                     f"mean {chosen['score'].mean():.4g}, calibration: {chosen['calibration'][0]}")

    metadata = {
        "rows": scores.height,
        "target": config.score.target,
        "method": config.score.method,
        "weighting": config.score.weighting,
        "mean_score": float(chosen["score"].mean()),
        "calibration": chosen["calibration"][0],
        "scores": markdown_table(chosen.sort("score", descending=True).select(
            ["prompt", "seed", "score", "z_score", "p_value"]).to_dicts()),
    }
    steps = store.read(
        "SELECT prompt, step, avg(distance) AS distance FROM step_distances "
        "WHERE adapter_id = ? AND target = ? GROUP BY prompt, step ORDER BY prompt, step",
        [adapter_id, config.score.target])
    series = {prompt: part["distance"].to_numpy() for (prompt,), part in steps.group_by(["prompt"], maintain_order=True)}
    metadata["divergence_by_step"] = image(curves(
        series, "sampling step", "W1 distance to the full model",
        f"per-step divergence of {adapter_id} ({config.score.target}, mean over seeds)",
        paths.report_dir / "divergence" / f"{adapter_id}.png"))
    matrix = _loo_matrix(store, config)
    if matrix is not None:
        values, genres = matrix
        metadata["loo_score_matrix"] = image(heatmap(
            values, genres, genres, "WTA score, rows: removed genre, columns: prompt",
            paths.report_dir / "loo_score_matrix.png"))
    top = store.read(
        "SELECT adapter_id, kind, prompt, avg(score) AS mean_score, avg(z_score) AS mean_z "
        "FROM wta_scores WHERE target = ? GROUP BY ALL ORDER BY mean_score DESC LIMIT ?",
        [config.score.target, TOP_ROWS])
    metadata["top_scores_all_adapters"] = markdown_table(top.to_dicts())
    return dg.MaterializeResult(metadata=metadata, check_results=[
        dg.AssetCheckResult(check_name="scores_finite", passed=finite, metadata={"rows": scores.height}),
        dg.AssetCheckResult(check_name="every_prompt_scored", passed=chosen.height == expected,
                            metadata={"scores": chosen.height, "expected": expected}),
    ])


def _loo_matrix(store, config) -> tuple[np.ndarray, list[str]] | None:
    """Mean LOO score per (removed genre, prompt), or None until every cell exists."""
    frame = store.read(
        "SELECT removed_genre, prompt, avg(score) AS score FROM wta_scores "
        "WHERE kind = 'loo' AND target = ? GROUP BY ALL", [config.score.target])
    if frame.height == 0:
        return None
    genres = sorted(set(frame["prompt"].to_list()))
    values = np.full((len(genres), len(genres)), np.nan)
    index = {genre: i for i, genre in enumerate(genres)}
    for row in frame.iter_rows(named=True):
        if row["removed_genre"] in index:
            values[index[row["removed_genre"]], index[row["prompt"]]] = row["score"]
    return values, genres
