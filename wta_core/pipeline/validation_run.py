"""Gather a run's outputs into the validation inputs, run the eleven tests, store the results."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import torch

from wta_core.config import RunConfig
from wta_core.data.prepare import genre_centroid_distances, load_clips
from wta_core.diffusion import sample_switched_trajectory
from wta_core.errors import ArtifactError
from wta_core.paths import WtaPaths
from wta_core.pipeline.base import prompt_table
from wta_core.pipeline.generation import load_denoiser, load_trajectory
from wta_core.storage import TableStore
from wta_core.subsets import FULL, ablation_genre
from wta_core.transport import step_distances
from wta_core.validation import ValidationInputs, bradford_hill, run_all, write_report
from wta_core.validation.result import TestResult

log = logging.getLogger(__name__)

RESULT_SCHEMA = {"test_id": pl.Int64, "name": pl.String, "metric": pl.String, "value": pl.Float64,
                 "threshold": pl.Float64, "passed": pl.Boolean, "verdict": pl.String, "details": pl.String}
SWITCH_FRACTIONS = (0.25, 0.5, 0.75)  # switch points as shares of the sampling steps


def _scores(store: TableStore, config: RunConfig) -> pl.DataFrame:
    if not store.table_exists("wta_scores"):
        return pl.DataFrame()
    # Ordered, because the tests average these rows and float sums depend on their order.
    return store.read(
        "SELECT * FROM wta_scores WHERE target = ? AND method = ? AND weighting = ? ORDER BY adapter_id, prompt, seed",
        [config.score.target, config.score.method, config.score.weighting])


def _seed_matrices(scores: pl.DataFrame, genres: list[str], seeds: list[int]) -> np.ndarray | None:
    """[R, G, G] leave-one-genre-out scores, rows removed genre, columns prompt; None if incomplete."""
    loo = scores.filter(pl.col("kind") == "loo")
    cube = np.full((len(seeds), len(genres), len(genres)), np.nan)
    index = {genre: i for i, genre in enumerate(genres)}
    seed_index = {seed: i for i, seed in enumerate(seeds)}
    for row in loo.iter_rows(named=True):
        if row["removed_genre"] in index and row["prompt"] in index and row["seed"] in seed_index:
            cube[seed_index[row["seed"]], index[row["removed_genre"]], index[row["prompt"]]] = row["score"]
    return None if np.isnan(cube).any() else cube


def _switch_curves(paths: WtaPaths, config: RunConfig, dataset: str, genre: str) -> dict[int, np.ndarray]:
    """Divergence from the full trajectory when sampling switches to the genre's LOO adapter at k."""
    genres, prompts, embeddings = prompt_table(sorted(set(load_clips(paths).genres)), dataset)
    row = genres.index(genre)
    full = load_denoiser(paths, FULL)
    removed = load_denoiser(paths, genre)
    steps = config.sample.steps
    seed = [config.sample.seeds[0]]
    shape = (config.audio.n_mels, config.audio.clip_frames)
    prompt = embeddings[row:row + 1]
    with torch.no_grad():
        reference = sample_switched_trajectory(full, full, steps, prompt, seed, steps,
                                               config.sample.guidance_scale, shape)
        curves = {}
        for fraction in SWITCH_FRACTIONS:
            k = max(1, min(steps - 1, int(round(fraction * steps))))
            switched = sample_switched_trajectory(full, removed, k, prompt, seed, steps,
                                                  config.sample.guidance_scale, shape)
            curves[k] = step_distances(switched.latents[0, 0].numpy(), reference.latents[0, 0].numpy(),
                                       config.score.method)
    return curves


def _granger_series(paths: WtaPaths, config: RunConfig, genres: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per trajectory pair (LOO against full): mean |prediction difference| and W1 divergence per step."""
    full = load_trajectory(paths, FULL)
    differences, divergences = [], []
    for genre in genres:
        other = load_trajectory(paths, genre)
        for g in range(len(full.genres)):
            for s in range(len(full.seeds)):
                gap = (other.predicted_clean[g, s] - full.predicted_clean[g, s]).abs().mean(dim=(1, 2))
                differences.append(gap.numpy().astype(float))
                divergences.append(step_distances(other.latents[g, s].numpy(), full.latents[g, s].numpy(),
                                                  config.score.method))
    return differences, divergences


def gather_inputs(paths: WtaPaths, config: RunConfig, dataset: str) -> ValidationInputs:
    """Everything the eleven tests read, from the tables and trajectories of this home."""
    store = TableStore(paths.database)
    clips = load_clips(paths)
    genres = sorted(set(clips.genres))
    seeds = list(config.sample.seeds)
    scores = _scores(store, config)
    inputs = ValidationInputs(genres=genres, score=config.score)
    if scores.height == 0:
        return inputs
    inputs.seed_scores = _seed_matrices(scores, genres, seeds)
    controls = scores.filter(pl.col("kind") == "control")["score"].to_numpy()
    inputs.control_scores = controls if len(controls) >= 2 else None

    target = ablation_genre(genres, config)
    loo_target = scores.filter((pl.col("kind") == "loo") & (pl.col("removed_genre") == target)
                               & (pl.col("prompt") == target))
    dose = scores.filter((pl.col("kind") == "dose") & (pl.col("prompt") == target))
    fractions = sorted(set(dose["fraction"].to_list())) if "fraction" in dose.columns else []
    dose_rows = store.read("SELECT adapter_id, fraction FROM adapters WHERE kind = 'dose'") \
        if store.table_exists("adapters") else pl.DataFrame()
    if dose_rows.height and loo_target.height:
        fraction_of = dict(zip(dose_rows["adapter_id"].to_list(), dose_rows["fraction"].to_list()))
        by_fraction: dict[float, list[float]] = {}
        for row in dose.iter_rows(named=True):
            by_fraction.setdefault(fraction_of[row["adapter_id"]], []).append(row["score"])
        fractions = sorted(by_fraction)
        if len(fractions) == len(config.lora.dose_fractions):
            means = [0.0] + [float(np.mean(by_fraction[f])) for f in fractions] + [float(loo_target["score"].mean())]
            inputs.dose_fractions = [0.0, *fractions, 1.0]
            inputs.dose_scores = np.asarray(means)

    noise = scores.filter(pl.col("kind") == "noise")
    if noise.height:
        # Sorted, because group_by's order varies between runs and the details store this dict.
        means = noise.group_by("prompt").agg(pl.col("score").mean()).sort("prompt")
        inputs.noise_scores = dict(zip(means["prompt"].to_list(), means["score"].to_list()))
        inputs.noise_genre = target

    loo_genres = sorted(set(scores.filter(pl.col("kind") == "loo")["removed_genre"].to_list()))
    if loo_genres:
        try:
            inputs.prediction_differences, inputs.divergences = _granger_series(paths, config, loo_genres)
        except ArtifactError as error:
            log.warning("Granger series not built: %s", error)
        if target in loo_genres:
            try:
                inputs.switch_curves = _switch_curves(paths, config, dataset, target)
            except ArtifactError as error:
                log.warning("switched trajectories not sampled: %s", error)

    names, distances = genre_centroid_distances(clips)
    if names == genres:
        inputs.proximity = distances
    return inputs


def code_version() -> str:
    """Return the git commit of the code, with "+changes" for a modified tree, or "unknown" outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def result_rows(results: list[TestResult]) -> pl.DataFrame:
    rows = []
    for result in results:
        rows.append({"test_id": result.test_id, "name": result.name, "metric": result.metric,
                     "value": None if result.value is None else float(result.value),
                     "threshold": None if result.threshold is None else float(result.threshold),
                     "passed": result.passed, "verdict": result.verdict,
                     "details": json.dumps(result.details, default=str)})
    return pl.DataFrame(rows, schema=RESULT_SCHEMA)


def validate_run(paths: WtaPaths, config: RunConfig, dataset: str) -> tuple[list[TestResult], dict[str, Path]]:
    """Run the eleven tests on this home's outputs; write `validation_results` and the report files."""
    inputs = gather_inputs(paths, config, dataset)
    results = run_all(inputs, config.validation)
    hill = bradford_hill(results)
    counts = TableStore(paths.database).read(
        "SELECT (SELECT count(*) FROM tracks WHERE status = 'ok') AS clips, "
        "(SELECT count(DISTINCT genre) FROM tracks WHERE status = 'ok') AS genres")
    run_info = {"preset": config.name, "dataset": dataset, "code_version": code_version(),
                "data": counts.to_dicts()[0], "config": dataclasses.asdict(config)}
    # The report files go first and the table last, so a failed write leaves the earlier
    # `validation_results` rows in place.
    try:
        files = write_report(results, hill, run_info, paths.report_dir)
    except OSError as error:
        raise ArtifactError(
            f"could not write the validation report into {paths.report_dir} ({error}); the validation_results "
            "rows are unchanged and no report file is half-written. Free disk space or make the folder writable, "
            "then materialise validation_report again"
        ) from error
    TableStore(paths.database).replace_rows("validation_results", result_rows(results))
    return results, files
