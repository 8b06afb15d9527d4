"""Attribution of one user generation (prompt, seed, steps) to every trained subset.

The generation is sampled once under every adapter of the home, from the same initial
noise, with deterministic DDIM. Each adapter's trajectory is scored against the full
adapter's trajectory with the run's Wasserstein method and step weighting, and the scores
are calibrated against the control adapters' scores for the same generation.

Results are stored per generation: `generations` (one row each), `attribution_scores`
(one row per adapter and target) and the trajectories under
`trajectories/generations/<generation_id>/<adapter_id>.safetensors`. A stored score is
reused while the adapter and the full adapter keep their checksums, so asking for the same
generation again computes only adapters trained since.

Screening (`screen_tracks`) ranks training tracks by a cheap audio-embedding similarity to
the generation, to pick which single tracks are worth a retraining.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors import SafetensorError, safe_open

from wta_core.config import RunConfig
from wta_core.data.prepare import load_clips
from wta_core.diffusion import sample_trajectory
from wta_core.errors import ArtifactError, ConfigError
from wta_core.model import NUM_TRAIN_TIMESTEPS
from wta_core.paths import WtaPaths
from wta_core.pipeline.generation import load_denoiser, write_safetensors
from wta_core.pipeline.scoring import NO_FLOOR, TARGETS
from wta_core.storage import TableStore, read_in, replace_in
from wta_core.subsets import FULL, USER_PREFIX
from wta_core.text import PromptEncoder
from wta_core.training import deterministic_algorithms
from wta_core.transport import calibrate, step_distances, step_weights, wta_score

log = logging.getLogger(__name__)

GENERATIONS_TABLE = "generations"
SCORES_TABLE = "attribution_scores"
GENERATION_SCHEMA = {"generation_id": pl.String, "prompt": pl.String, "seed": pl.Int64, "steps": pl.Int64,
                     "created_at": pl.Datetime("us")}
ATTRIBUTION_SCHEMA = {
    "generation_id": pl.String, "adapter_id": pl.String, "kind": pl.String, "removed": pl.String,
    "target": pl.String, "method": pl.String, "weighting": pl.String, "score": pl.Float64,
    "z_score": pl.Float64, "p_value": pl.Float64, "calibration": pl.String,
    "adapter_sha256": pl.String, "reference_sha256": pl.String, "computed_at": pl.Datetime("us"),
}
MAX_SEED = 2**63 - 1
REMOVAL_KINDS = ("loo", "dose", "noise", "user")  # kinds that remove or corrupt training data


def generation_id(prompt: str, seed: int, steps: int) -> str:
    """Short id of a generation: the first 12 hex digits of sha256("prompt|seed|steps")."""
    return hashlib.sha256(f"{prompt}|{seed}|{steps}".encode("utf-8")).hexdigest()[:12]


def generation_dir(paths: WtaPaths, generation: str) -> Path:
    return paths.trajectory_dir / "generations" / generation


def removed_label(kind: str, adapter_id: str, removed_genre: str | None) -> str | None:
    """Return what an adapter left out: the genre, the user subset's name, or None for full and controls."""
    if kind == "user":
        return adapter_id.removeprefix(USER_PREFIX)
    return removed_genre


@dataclass(frozen=True)
class GenerationTrajectory:
    """One adapter's trajectory of one generation, float32 on the CPU."""

    adapter_id: str
    adapter_sha256: str
    latents: torch.Tensor  # [steps, C, T]
    predicted_clean: torch.Tensor  # [steps, C, T]
    timesteps: torch.Tensor  # [steps]


@dataclass
class Attribution:
    """Every stored score of one generation, and which adapters this call computed."""

    generation: dict  # the `generations` row
    scores: pl.DataFrame  # `attribution_scores` rows of the generation, every target
    computed: list[str]  # adapter ids scored by this call (the full adapter is never scored)
    reused: list[str]  # adapter ids whose stored scores were still valid
    target: str  # the preset's score target, which `ranked` and `controls` read
    seconds: float

    @property
    def generation_id(self) -> str:
        return self.generation["generation_id"]

    def ranked(self) -> pl.DataFrame:
        """Removal subsets for `target`, highest score first."""
        return (self.scores.filter((pl.col("target") == self.target) & pl.col("kind").is_in(REMOVAL_KINDS))
                .sort(["score", "adapter_id"], descending=[True, False]))

    def controls(self) -> pl.DataFrame:
        return self.scores.filter((pl.col("target") == self.target) & (pl.col("kind") == "control")) \
            .sort("adapter_id")

    def calibration(self) -> str:
        notes = self.ranked()["calibration"].unique().to_list()
        return "; ".join(sorted(note for note in notes if note)) or NO_FLOOR


# ---------------------------------------------------------------------------------------
# Validation and storage


def check_request(prompt: str, seed: int, steps: int) -> None:
    """Raise `ConfigError` for an empty prompt, a seed outside [0, 2**63 - 1] or steps outside [1, 1000]."""
    if not prompt or not prompt.strip():
        raise ConfigError("the prompt is empty; pass the text of the generation with --prompt")
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must lie in [0, {MAX_SEED}], got {seed}")
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ConfigError(f"steps must lie in [1, {NUM_TRAIN_TIMESTEPS}] (the training timesteps), got {steps}")


def _adapters(store: TableStore) -> pl.DataFrame:
    if not store.table_exists("adapters"):
        raise ArtifactError(f"no adapters table in {store.path}; materialise lora_adapters (at least the "
                            "full and control partitions) first")
    adapters = store.read("SELECT adapter_id, kind, removed_genre, sha256 FROM adapters ORDER BY adapter_id")
    if FULL not in adapters["adapter_id"].to_list():
        raise ArtifactError(f"the full adapter is not in {store.path}; materialise lora_adapters for "
                            f"partition {FULL!r} first, because every score compares against it")
    return adapters


def _stored_scores(store: TableStore, generation: str) -> pl.DataFrame:
    if not store.table_exists(SCORES_TABLE):
        return pl.DataFrame(schema=ATTRIBUTION_SCHEMA)
    return store.read(f"SELECT * FROM {SCORES_TABLE} WHERE generation_id = ?", [generation])


def _valid_stored(stored: pl.DataFrame, adapters: pl.DataFrame, config: RunConfig, reference_sha: str) -> set[str]:
    """Adapter ids whose stored rows cover every target and match the current checksums and method."""
    current = dict(zip(adapters["adapter_id"].to_list(), adapters["sha256"].to_list()))
    valid = set()
    for (adapter_id,), rows in stored.group_by(["adapter_id"]):
        fresh = rows.filter((pl.col("adapter_sha256") == current.get(adapter_id))
                            & (pl.col("reference_sha256") == reference_sha)
                            & (pl.col("method") == config.score.method)
                            & (pl.col("weighting") == config.score.weighting))
        if set(fresh["target"].to_list()) == set(TARGETS):
            valid.add(adapter_id)
    return valid


def _record_generation(store: TableStore, generation: str, prompt: str, seed: int, steps: int) -> dict:
    """Insert the `generations` row unless it exists; return the stored row."""
    row = {"generation_id": generation, "prompt": prompt, "seed": seed, "steps": steps,
           "created_at": datetime.now(timezone.utc).replace(tzinfo=None)}
    with store.transaction() as connection:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {GENERATIONS_TABLE} (generation_id VARCHAR, prompt VARCHAR, "
            "seed BIGINT, steps BIGINT, created_at TIMESTAMP)")
        existing = read_in(connection, f"SELECT * FROM {GENERATIONS_TABLE} WHERE generation_id = ?", [generation])
        if existing.height:
            return existing.to_dicts()[0]
        connection.execute(f"INSERT INTO {GENERATIONS_TABLE} VALUES (?, ?, ?, ?, ?)",
                           [generation, prompt, seed, steps, row["created_at"]])
    return row


# ---------------------------------------------------------------------------------------
# Trajectories


def _trajectory_file(paths: WtaPaths, generation: str, adapter_id: str) -> Path:
    return generation_dir(paths, generation) / f"{adapter_id}.safetensors"


def _load_generation_trajectory(path: Path, adapter_id: str, sha256: str, steps: int) -> GenerationTrajectory | None:
    """Read the trajectory at `path`; return None when it is missing, unreadable or from another adapter state."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        log.warning("ignoring unreadable trajectory %s (%s); sampling it again", path, error)
        return None
    if metadata.get("adapter_sha256") != sha256 or tensors["latents"].shape[0] != steps:
        return None
    return GenerationTrajectory(adapter_id, sha256, tensors["latents"].to(torch.float32),
                                tensors["predicted_clean"].to(torch.float32), tensors["timesteps"])


def _sample_and_store(paths: WtaPaths, config: RunConfig, request: dict, embedding: torch.Tensor,
                      adapter_id: str, sha256: str, device: str) -> GenerationTrajectory:
    """Sample the generation under one adapter, write it atomically and return the stored (rounded) values."""
    denoiser = load_denoiser(paths, adapter_id, device)
    latent_shape = (config.audio.n_mels, config.audio.clip_frames)
    with torch.no_grad():
        trajectory = sample_trajectory(denoiser, embedding.to(device), [request["seed"]], request["steps"],
                                       config.sample.guidance_scale, latent_shape, prompts=[request["prompt"]])
    dtype = getattr(torch, config.sample.store_dtype)
    tensors = {
        "latents": trajectory.latents[0, 0].to(dtype).contiguous(),
        "predicted_clean": trajectory.predicted_clean[0, 0].to(dtype).contiguous(),
        "initial_noise": trajectory.initial_noise[0].to(torch.float32).contiguous(),
        "timesteps": trajectory.timesteps.to(torch.int64).contiguous(),
    }
    metadata = {"adapter_id": adapter_id, "adapter_sha256": sha256, "generation_id": request["generation_id"],
                "prompt": request["prompt"], "seed": str(request["seed"]), "steps": str(request["steps"]),
                "guidance_scale": str(trajectory.guidance_scale)}
    path = _trajectory_file(paths, request["generation_id"], adapter_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    try:
        write_safetensors(temporary, tensors, metadata)
        temporary.replace(path)
    except (OSError, SafetensorError) as error:
        temporary.unlink(missing_ok=True)
        raise ArtifactError(f"could not write the trajectory of {adapter_id!r} to {path} ({error}); free disk "
                            "space or make the folder writable, then run the attribution again") from error
    # Scores are computed from the stored precision, so a reused file gives the same scores.
    return GenerationTrajectory(adapter_id, sha256, tensors["latents"].to(torch.float32),
                                tensors["predicted_clean"].to(torch.float32), tensors["timesteps"])


# ---------------------------------------------------------------------------------------
# Scores


def _score_rows(config: RunConfig, generation: str, adapter: dict, reference: GenerationTrajectory,
                other: GenerationTrajectory, computed_at: datetime) -> list[dict]:
    weights = step_weights(reference.timesteps.numel(), config.score.weighting, config.score.decay)
    options = {"n_projections": config.score.sliced_projections, "reg": config.score.sinkhorn_reg,
               "seed": config.score.seed}
    rows = []
    for target in TARGETS:
        compared = other.latents if target == "latent" else other.predicted_clean
        baseline = reference.latents if target == "latent" else reference.predicted_clean
        distances = step_distances(compared.numpy(), baseline.numpy(), config.score.method, **options)
        rows.append({
            "generation_id": generation, "adapter_id": adapter["adapter_id"], "kind": adapter["kind"],
            "removed": removed_label(adapter["kind"], adapter["adapter_id"], adapter["removed_genre"]),
            "target": target, "method": config.score.method, "weighting": config.score.weighting,
            "score": wta_score(distances, weights), "z_score": None, "p_value": None, "calibration": NO_FLOOR,
            "adapter_sha256": other.adapter_sha256, "reference_sha256": reference.adapter_sha256,
            "computed_at": computed_at,
        })
    return rows


def _calibrate_generation(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` of one generation with z, p and calibration set against its control rows, per target."""
    parts = []
    for target in sorted(set(rows["target"].to_list())):
        part = rows.filter(pl.col("target") == target)
        null = part.filter(pl.col("kind") == "control")["score"].to_numpy()
        z, p = calibrate(part["score"].to_numpy(), null)
        note = NO_FLOOR if len(null) < 2 else f"against {len(null)} control replicate scores of this generation"
        parts.append(part.with_columns(pl.Series("z_score", np.atleast_1d(z), dtype=pl.Float64),
                                       pl.Series("p_value", np.atleast_1d(p), dtype=pl.Float64),
                                       pl.lit(note).alias("calibration")))
    return pl.concat(parts).select(list(ATTRIBUTION_SCHEMA)) if parts else rows


def _store(store: TableStore, generation: str, new_rows: pl.DataFrame, computed: list[str],
           config: RunConfig) -> pl.DataFrame:
    """Replace the computed adapters' rows and recalibrate the generation, in one transaction.

    A new control score moves the noise floor, so every row of the generation is recalibrated.
    """
    with store.transaction() as connection:
        for adapter_id in computed:
            replace_in(connection, SCORES_TABLE, new_rows.filter(pl.col("adapter_id") == adapter_id),
                       {"generation_id": generation, "adapter_id": adapter_id})
        current = read_in(connection, f"SELECT * FROM {SCORES_TABLE} WHERE generation_id = ? AND method = ? "
                                      "AND weighting = ?", [generation, config.score.method, config.score.weighting])
        replace_in(connection, SCORES_TABLE, _calibrate_generation(current),
                   {"generation_id": generation, "method": config.score.method,
                    "weighting": config.score.weighting})
        return read_in(connection, f"SELECT * FROM {SCORES_TABLE} WHERE generation_id = ? "
                                   "ORDER BY target, adapter_id", [generation])


def _score_adapters(paths: WtaPaths, config: RunConfig, request: dict, records: dict[str, dict],
                    pending: list[str], device: str, num_threads: int | None) -> pl.DataFrame:
    """Sample (or read) the full adapter's and each pending adapter's trajectory, and score them."""
    generation = request["generation_id"]
    embedding = PromptEncoder().encode([request["prompt"]])
    computed_at = datetime.now(timezone.utc).replace(tzinfo=None)

    def trajectory_of(adapter_id: str) -> GenerationTrajectory:
        sha = records[adapter_id]["sha256"]
        path = _trajectory_file(paths, generation, adapter_id)
        stored = _load_generation_trajectory(path, adapter_id, sha, request["steps"])
        return stored or _sample_and_store(paths, config, request, embedding, adapter_id, sha, device)

    rows: list[dict] = []
    with deterministic_algorithms(num_threads):
        reference = trajectory_of(FULL)
        for adapter_id in pending:
            other = trajectory_of(adapter_id)
            rows += _score_rows(config, generation, records[adapter_id], reference, other, computed_at)
    return pl.DataFrame(rows, schema=ATTRIBUTION_SCHEMA)


def attribute_generation(paths: WtaPaths, config: RunConfig, prompt: str, seed: int, steps: int | None = None,
                         device: str = "cpu", num_threads: int | None = None) -> Attribution:
    """Score one generation under every adapter of the home and store the calibrated scores.

    `steps` None takes the preset's `sample.steps`. Only adapters without a valid stored
    score for this generation are sampled and scored. `num_threads` fixes torch's CPU
    threads while sampling (None keeps torch's setting). CPU results depend on the thread
    count, so pass the count the adapters were trained with.
    """
    started = time.perf_counter()
    steps = config.sample.steps if steps is None else steps
    check_request(prompt, seed, steps)
    store = TableStore(paths.database)
    adapters = _adapters(store)
    generation = generation_id(prompt, seed, steps)
    row = _record_generation(store, generation, prompt, seed, steps)
    request = {"generation_id": generation, "prompt": prompt, "seed": seed, "steps": steps}

    records = {record["adapter_id"]: record for record in adapters.to_dicts()}
    reference_sha = records[FULL]["sha256"]
    valid = _valid_stored(_stored_scores(store, generation), adapters, config, reference_sha)
    pending = [adapter_id for adapter_id in records if adapter_id != FULL and adapter_id not in valid]
    log.info("generation %s: %d adapters to score, %d stored scores reused", generation, len(pending), len(valid))

    if pending:
        rows = _score_adapters(paths, config, request, records, pending, device, num_threads)
        scores = _store(store, generation, rows, pending, config)
    else:
        scores = _stored_scores(store, generation).sort(["target", "adapter_id"])
    # Rows of adapters that are gone from the adapters table are left out of the result.
    scores = scores.filter(pl.col("adapter_id").is_in(list(records)))
    return Attribution(generation=row, scores=scores, computed=pending, reused=sorted(valid),
                       target=config.score.target, seconds=time.perf_counter() - started)


def load_reference_final(paths: WtaPaths, generation: str) -> torch.Tensor:
    """Read the full adapter's final latent [C, T] of a stored generation."""
    path = _trajectory_file(paths, generation, FULL)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.get_tensor("latents")[-1].to(torch.float32)
    except (SafetensorError, OSError, ValueError) as error:
        raise ArtifactError(f"cannot read the full adapter's trajectory of generation {generation} at {path} "
                            f"({error}); run the attribution again") from error


# ---------------------------------------------------------------------------------------
# Screening


SCREEN_EMBEDDING = "embedding"
SCREEN_GRADIENT = "gradient"
SCREENS = (SCREEN_EMBEDDING, SCREEN_GRADIENT)


@dataclass(frozen=True)
class TrackCandidate:
    """A training track ranked by a cheap similarity to a generation."""

    rank: int
    track_id: str
    genre: str
    # Cosine similarity of standardised MFCC-chroma embeddings ("embedding"), or the
    # TracIn-LoRA gradient dot product ("gradient").
    similarity: float


def screen_tracks(paths: WtaPaths, config: RunConfig, generation: str, count: int,
                  by: str = SCREEN_EMBEDDING, prompt: str | None = None, dataset: str = "embedded",
                  num_threads: int | None = None) -> tuple[list[TrackCandidate], int, str]:
    """Rank every training clip by similarity to the generation; return the top `count`, N and the score's name.

    `by="embedding"`: the full adapter's final latent and every clip's log-mel are rendered
    to audio with the same Griffin-Lim path and embedded with the MFCC-chroma embedding of
    `wta_core.comparison.embedding`. The score is their cosine similarity.
    `by="gradient"`: the TracIn-LoRA dot product of `wta_core.comparison.gradient` between
    each clip's training loss gradient and the generation's (its final latent under its
    `prompt`), over the full adapter's LoRA weights, with the clips conditioned on the genre
    prompts of `dataset` as in training.

    Either score is correlation only: it picks candidates, and the WTA score of each
    candidate's retraining is the test.
    """
    if by not in SCREENS:
        raise ConfigError(f"unknown screening score {by!r}; choose one of {', '.join(SCREENS)}")
    clips = load_clips(paths)
    total = len(clips.track_ids)
    if not 1 <= count <= total - 1:
        raise ConfigError(f"screening takes 1 to {total - 1} tracks (the dataset has {total} clips, and removing "
                          f"every one leaves nothing to train on), got {count}")
    started = time.perf_counter()
    final = load_reference_final(paths, generation)
    if by == SCREEN_EMBEDDING:
        from wta_core.comparison.embedding import cosine_similarity, fit_audio_embedding, render_latents

        space, clip_embeddings = fit_audio_embedding(render_latents(clips.features, config.audio), config.audio)
        similarity = cosine_similarity(space.embed_latents(final[None]), clip_embeddings)[0]
        name = space.name
    else:
        from wta_core.comparison.gradient import tracin_clip_scores
        from wta_core.pipeline.adapters import clip_prompt_embeddings

        if prompt is None:
            raise ConfigError("gradient screening needs the generation's prompt")
        with deterministic_algorithms(num_threads):
            similarity = tracin_clip_scores(load_denoiser(paths, FULL), final[None, None],
                                            PromptEncoder().encode([prompt]), clips.features,
                                            clip_prompt_embeddings(clips, dataset),
                                            seed=config.score.seed)[:, 0]
        name = "tracin-lora"
    # Ties go to table order, so the ranking is deterministic.
    order = sorted(range(total), key=lambda index: (-similarity[index], index))
    log.info("screened %d clips by %s similarity in %.1f s", total, name, time.perf_counter() - started)
    candidates = [TrackCandidate(rank=rank, track_id=clips.track_ids[index], genre=clips.genres[index],
                                 similarity=float(similarity[index]))
                  for rank, index in enumerate(order[:count], start=1)]
    return candidates, total, name


__all__ = ["SCREENS", "Attribution", "TrackCandidate", "attribute_generation", "check_request", "generation_id",
           "screen_tracks"]
