"""WTA scores: per-step Wasserstein distances to the full model, weighted, and calibrated.

Scores are computed for both targets, the latent after each step and the predicted clean
sample at each step; `ScoreConfig.target` names the one the reports and validation read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from wta_core.config import RunConfig
from wta_core.paths import WtaPaths
from wta_core.pipeline.adapters import adapter_record
from wta_core.pipeline.generation import check_comparable, load_trajectory
from wta_core.storage import TableStore, read_in, replace_in
from wta_core.subsets import FULL
from wta_core.transport import calibrate, step_distances, step_weights, wta_score

log = logging.getLogger(__name__)

TARGETS = ("latent", "predicted_clean")
NO_FLOOR = "no noise floor: fewer than 2 control replicate scores"
STEP_SCHEMA = {
    "adapter_id": pl.String, "prompt": pl.String, "seed": pl.Int64, "step": pl.Int64,
    "timestep": pl.Int64, "target": pl.String, "method": pl.String, "distance": pl.Float64,
}
SCORE_SCHEMA = {
    "adapter_id": pl.String, "kind": pl.String, "removed_genre": pl.String, "prompt": pl.String,
    "prompt_text": pl.String, "seed": pl.Int64, "target": pl.String, "score": pl.Float64,
    "method": pl.String, "weighting": pl.String, "z_score": pl.Float64, "p_value": pl.Float64,
    "calibration": pl.String,
}


@dataclass(frozen=True)
class ScoreOutcome:
    """Rows written for one adapter."""

    adapter_id: str
    steps: pl.DataFrame
    scores: pl.DataFrame


def compute_scores(paths: WtaPaths, config: RunConfig, adapter_id: str) -> ScoreOutcome:
    """Distances and uncalibrated scores of `adapter_id` against the full adapter, every prompt and seed."""
    record = adapter_record(paths, adapter_id)
    full = load_trajectory(paths, FULL)
    other = load_trajectory(paths, adapter_id)
    check_comparable(full, other)
    method = config.score.method
    weights = step_weights(full.timesteps.numel(), config.score.weighting, config.score.decay)
    options = {"n_projections": config.score.sliced_projections, "reg": config.score.sinkhorn_reg,
               "seed": config.score.seed}
    timesteps = full.timesteps.tolist()
    step_rows, score_rows = [], []
    for target in TARGETS:
        reference = full.latents if target == "latent" else full.predicted_clean
        compared = other.latents if target == "latent" else other.predicted_clean
        for g, genre in enumerate(full.genres):
            for s, seed in enumerate(full.seeds):
                distances = step_distances(compared[g, s].numpy(), reference[g, s].numpy(), method, **options)
                for step, (timestep, distance) in enumerate(zip(timesteps, distances)):
                    step_rows.append({"adapter_id": adapter_id, "prompt": genre, "seed": seed, "step": step,
                                      "timestep": int(timestep), "target": target, "method": method,
                                      "distance": float(distance)})
                score_rows.append({
                    "adapter_id": adapter_id, "kind": record["kind"], "removed_genre": record["removed_genre"],
                    "prompt": genre, "prompt_text": full.prompts[g], "seed": seed, "target": target,
                    "score": wta_score(distances, weights), "method": method,
                    "weighting": config.score.weighting, "z_score": None, "p_value": None,
                    "calibration": NO_FLOOR,
                })
    return ScoreOutcome(adapter_id, pl.DataFrame(step_rows, schema=STEP_SCHEMA),
                        pl.DataFrame(score_rows, schema=SCORE_SCHEMA))


def _calibrated(scores: pl.DataFrame, controls: pl.DataFrame) -> pl.DataFrame:
    """`scores` with z_score, p_value and calibration set against `controls` of the same target."""
    parts = []
    for target in scores["target"].unique().to_list():
        part = scores.filter(pl.col("target") == target)
        null = controls.filter(pl.col("target") == target)["score"].to_numpy()
        z, p = calibrate(part["score"].to_numpy(), null)
        note = NO_FLOOR if len(null) < 2 else f"against {len(null)} control replicate scores"
        parts.append(part.with_columns(pl.Series("z_score", np.atleast_1d(z), dtype=pl.Float64),
                                       pl.Series("p_value", np.atleast_1d(p), dtype=pl.Float64),
                                       pl.lit(note).alias("calibration")))
    return pl.concat(parts) if parts else scores


def store_scores(paths: WtaPaths, outcome: ScoreOutcome) -> pl.DataFrame:
    """Replace the adapter's rows and calibrate, in one transaction; return its calibrated scores.

    Calibration reads the control rows of the same method and weighting. Writing a control
    changes the noise floor, so then every adapter's rows are calibrated again.
    """
    store = TableStore(paths.database)
    adapter_id = outcome.adapter_id
    with store.transaction() as connection:
        replace_in(connection, "step_distances", outcome.steps, {"adapter_id": adapter_id})
        replace_in(connection, "wta_scores", outcome.scores, {"adapter_id": adapter_id})
        method = outcome.scores["method"][0]
        weighting = outcome.scores["weighting"][0]
        # Ordered, because the noise floor's mean and spread are float sums whose last bits
        # depend on the order of the control scores.
        every = read_in(connection, "SELECT * FROM wta_scores WHERE method = ? AND weighting = ? "
                        "ORDER BY adapter_id, target, prompt, seed", [method, weighting])
        controls = every.filter(pl.col("kind") == "control")
        is_control = outcome.scores["kind"][0] == "control"
        affected = every if is_control else every.filter(pl.col("adapter_id") == adapter_id)
        for (affected_id,), part in affected.group_by(["adapter_id"]):
            replace_in(connection, "wta_scores", _calibrated(part, controls).select(list(SCORE_SCHEMA)),
                       {"adapter_id": affected_id, "method": method, "weighting": weighting})
        _create_summary_view(connection)
        result = read_in(connection, "SELECT * FROM wta_scores WHERE adapter_id = ? ORDER BY target, prompt, seed",
                         [adapter_id])
    return result


def _create_summary_view(connection) -> None:
    connection.execute(
        """
        CREATE OR REPLACE VIEW score_summary AS
        SELECT adapter_id, kind, removed_genre, prompt, target, method, weighting,
               avg(score) AS mean_score, stddev_samp(score) AS std_score, count(*) AS seeds,
               avg(z_score) AS mean_z_score
        FROM wta_scores
        GROUP BY ALL
        """
    )


def score_adapter(paths: WtaPaths, config: RunConfig, adapter_id: str) -> pl.DataFrame:
    """Compute, store and calibrate the scores of one adapter against the full adapter."""
    outcome = compute_scores(paths, config, adapter_id)
    return store_scores(paths, outcome)
