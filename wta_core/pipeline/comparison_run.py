"""Run the four attribution methods on one home's outputs and compare them with retraining."""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from wta_core.comparison.destination import destination_attribution
from wta_core.comparison.embedding import embedding_attribution
from wta_core.comparison.gradient import tracin_attribution
from wta_core.comparison.method import wta_method_scores
from wta_core.comparison.metrics import LdsInputs, compare_methods, lds_masks, output_divergence, retraining_effect
from wta_core.comparison.report import comparison_frame, comparison_markdown, comparison_plot, comparison_rows
from wta_core.config import RunConfig
from wta_core.data.prepare import load_clips
from wta_core.diffusion import sample_trajectory
from wta_core.paths import WtaPaths
from wta_core.pipeline.adapters import clip_prompt_embeddings
from wta_core.pipeline.base import load_base, prompt_table
from wta_core.pipeline.generation import load_denoiser, load_trajectory
from wta_core.lora import load_adapter
from wta_core.model import Denoiser
from wta_core.storage import TableStore
from wta_core.pipeline.scoring import compute_scores
from wta_core.subsets import FULL, subset_specs
from wta_core.training import ProgressCallback, train_lora

log = logging.getLogger(__name__)

LDS_SEED = 0


@dataclass(frozen=True)
class ComparisonOutcome:
    """Rows of `method_comparison` and the files written for them."""

    rows: list[dict]
    markdown: str
    plot: Path
    lds_subsets: int


def _lds_adapter_id(index: int) -> str:
    return f"lds-{index:02d}"


def _train_lds_adapter(paths: WtaPaths, config: RunConfig, dataset: str, index: int, removed_genres: set[str],
                       progress: ProgressCallback | None = None, num_threads: int | None = None) -> float:
    """Train the LDS adapter of mask `index` (without `removed_genres`) and return its training seconds.

    Runs in a worker process or in the caller, so it loads its inputs from the home.
    """
    clips = load_clips(paths)
    member = torch.tensor([genre not in removed_genres for genre in clips.genres])
    adapter_id = _lds_adapter_id(index)
    result = train_lora(paths.base_model_dir, clips.features, clip_prompt_embeddings(clips, dataset), member,
                        config.lora, config.lora.seed, paths.adapter_dir(adapter_id),
                        paths.checkpoint_dir(adapter_id), progress=progress, num_threads=num_threads)
    return result.seconds


def _train_lds_adapters(paths: WtaPaths, config: RunConfig, dataset: str, removed: dict[int, set[str]],
                        progress: ProgressCallback | None, num_threads: int | None, workers: int) -> None:
    """Train the LDS adapters of `removed` (mask index to removed genres), `workers` at a time.

    Every adapter trains with the same seed and thread count in whichever process, so the
    bytes do not depend on `workers`. Worker processes report when an adapter ends; only
    training in the caller reports progress through `progress`.
    """
    if workers <= 1 or len(removed) <= 1:
        for index, genres in removed.items():
            _train_lds_adapter(paths, config, dataset, index, genres, progress, num_threads)
        return
    # Spawned workers start clean: forking after torch has started threads is unsafe.
    with ProcessPoolExecutor(max_workers=min(workers, len(removed)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_lds_adapter, paths, config, dataset, index, genres, None, num_threads): index
                   for index, genres in removed.items()}
        for future in as_completed(futures):
            index = futures[future]
            seconds = future.result()
            log.info("LDS adapter %s trained in %.1f s", _lds_adapter_id(index), seconds)


def lds_divergence(paths: WtaPaths, config: RunConfig, dataset: str, masks: np.ndarray, embed: Callable,
                   full_embeddings: np.ndarray, progress: ProgressCallback | None = None,
                   num_threads: int | None = None, workers: int = 1) -> np.ndarray:
    """Train one adapter per half-subset mask and measure each prompt's output divergence [K, P].

    Adapters already in the home are reused, and the missing ones train `workers` at a time.
    """
    clips = load_clips(paths)
    genres, prompts, embeddings = prompt_table(sorted(set(clips.genres)), dataset)
    shape = (config.audio.n_mels, config.audio.clip_frames)
    removed_by_mask = [{genre for genre, drop in zip(genres, removed) if drop} for removed in masks]
    missing = {index: removed for index, removed in enumerate(removed_by_mask)
               if not (paths.adapter_dir(_lds_adapter_id(index)) / "adapter_model.safetensors").exists()}
    if missing:
        log.info("training %d of %d LDS adapters, %d at a time", len(missing), len(masks), max(1, workers))
        _train_lds_adapters(paths, config, dataset, missing, progress, num_threads, workers)

    finals = []
    for index, removed_genres in enumerate(removed_by_mask):
        folder = paths.adapter_dir(_lds_adapter_id(index))
        denoiser = Denoiser(load_adapter(load_base(paths), folder).eval())
        with torch.no_grad():
            trajectory = sample_trajectory(denoiser, embeddings, list(config.sample.seeds), config.sample.steps,
                                           config.sample.guidance_scale, shape)
        finals.append(trajectory.latents[:, :, -1])
        log.info("LDS subset %d/%d (without %s) sampled", index + 1, len(masks), sorted(removed_genres))
    others = np.stack([embed(final) for final in finals])
    return output_divergence(full_embeddings, others)


def compare_run(paths: WtaPaths, config: RunConfig, dataset: str, progress: ProgressCallback | None = None,
                num_threads: int | None = None, clap_weights: str | None = None,
                workers: int = 1) -> ComparisonOutcome:
    """Compute WTA, embedding similarity, TracIn-LoRA and destination-only scores, and compare them.

    `clap_weights` names a local LAION-CLAP checkpoint for the embedding method (used when
    `laion_clap` is installed); without it the embedding is MFCC-chroma statistics. The LDS
    adapters train `workers` at a time, each in its own process when `workers` > 1.
    """
    clips = load_clips(paths)
    genres = sorted(set(clips.genres))
    full = load_trajectory(paths, FULL)
    removed = {genre: load_trajectory(paths, genre) for genre in genres}
    full_final = full.latents[:, :, -1]

    store = TableStore(paths.database)
    scores = store.read("SELECT * FROM wta_scores WHERE method = ? AND weighting = ?",
                        [config.score.method, config.score.weighting])
    # WTA's cost is the scoring of stored trajectories, as the wta_scores stage does it (every
    # step, both targets) for the genre and control adapters, without the table writes.
    # Retraining is counted separately.
    controls = [spec.subset_id for spec in subset_specs(genres, config) if spec.kind == "control"]
    started = time.perf_counter()
    for adapter_id in [*genres, *controls]:
        compute_scores(paths, config, adapter_id)
    wta = wta_method_scores(scores, genres, time.perf_counter() - started, len(config.lora.control_seeds),
                            target=config.score.target)

    embedding, space = embedding_attribution(full_final, clips.features, clips.genres, genres, full.genres,
                                             config.audio, clap_weights=clap_weights)
    destination = destination_attribution(full, removed, genres, method=config.score.method)
    _, _, prompt_embeddings = prompt_table(genres, dataset)
    gradient = tracin_attribution(load_denoiser(paths, FULL), full_final, prompt_embeddings, clips.features,
                                  clip_prompt_embeddings(clips, dataset), clips.genres, genres, full.genres,
                                  seed=config.score.seed)

    effect = retraining_effect(space, full_final, {g: t.latents[:, :, -1] for g, t in removed.items()},
                               genres, full.genres)
    lds = None
    k = config.lds_subsets
    if k >= 3:
        masks = lds_masks(genres, k, LDS_SEED)
        divergence = lds_divergence(paths, config, dataset, masks, space.embed_latents,
                                    space.embed_latents(full_final), progress, num_threads, workers)
        lds = LdsInputs(masks=masks, divergence=divergence)
    evaluations = compare_methods([wta, embedding, gradient, destination], effect, lds)
    rows = comparison_rows(evaluations)
    store.replace_rows("method_comparison", comparison_frame(rows))
    markdown = comparison_markdown(rows)
    folder = paths.report_dir
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / "method_comparison.md.tmp"
    temporary.write_text(markdown, encoding="utf-8")
    temporary.replace(folder / "method_comparison.md")
    plot = comparison_plot(rows, folder / "method_comparison.png")
    return ComparisonOutcome(rows=rows, markdown=markdown, plot=plot, lds_subsets=0 if lds is None else k)


__all__ = ["compare_run", "ComparisonOutcome"]
