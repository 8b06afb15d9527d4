"""The base model: pretrained once on the pretraining portion, then shared by every adapter."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from wta_core.config import RunConfig
from wta_core.data.prepare import genre_prompts, load_pretrain_clips
from wta_core.errors import ArtifactError, ConfigError
from wta_core.model import build_embedded_dit, count_parameters, load_base_model, save_base_model
from wta_core.paths import WtaPaths
from wta_core.text import PromptEncoder
from wta_core.training import ProgressCallback, train_base

log = logging.getLogger(__name__)

SUMMARY_NAME = "training_summary.json"


@dataclass(frozen=True)
class BaseModelInfo:
    """Location and training record of the base model."""

    folder: Path
    parameters: int
    final_loss: float
    steps: int
    seconds: float
    reused: bool
    losses: list[float]


def _summary_path(paths: WtaPaths) -> Path:
    return paths.base_model_dir.parent / "base_model_summary.json"


def ensure_base_model(
    paths: WtaPaths, config: RunConfig, progress: ProgressCallback | None = None, rebuild: bool = False
) -> BaseModelInfo:
    """Return the embedded base model, pretraining it first when it is missing or `rebuild` is set.

    The base model trains only on the pretraining portion of the corpus, never on an attribution clip.
    """
    if config.model.kind != "embedded":
        raise ConfigError(
            f"model.kind {config.model.kind!r} uses a pretrained checkpoint; set model.checkpoint_path "
            "to a local Stable Audio Open folder and load it with load_stable_audio_pipeline"
        )
    folder = paths.base_model_dir
    summary_path = _summary_path(paths)
    if folder.exists() and summary_path.exists() and not rebuild:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        return BaseModelInfo(folder=folder, reused=True, **summary)

    features, prompts = load_pretrain_clips(paths)
    encoder = PromptEncoder()
    unique = sorted(set(prompts))
    table = dict(zip(unique, encoder.encode(unique)))
    embeddings = torch.stack([table[prompt] for prompt in prompts])
    model = build_embedded_dit(config.audio, config.model, seed=config.base.seed)
    started = time.perf_counter()
    record = train_base(model, features, embeddings, config.base, log=progress)
    save_base_model(model, folder)
    summary = {"parameters": count_parameters(model), "final_loss": record["final_loss"],
               "steps": record["steps"], "seconds": time.perf_counter() - started,
               "losses": [float(x) for x in record["losses"]]}
    temporary = summary_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(summary), encoding="utf-8")
    temporary.replace(summary_path)
    return BaseModelInfo(folder=folder, reused=False, **summary)


def load_base(paths: WtaPaths) -> torch.nn.Module:
    """Load the stored base model, or raise `ArtifactError` saying to materialise it."""
    if not paths.base_model_dir.exists():
        raise ArtifactError(f"no base model in {paths.base_model_dir}; materialise the base_model asset first")
    return load_base_model(paths.base_model_dir)


def prompt_table(genres: list[str], dataset: str) -> tuple[list[str], dict[str, str], torch.Tensor]:
    """Genres in sorted order, their prompts, and the prompt embeddings [G, 384] in that order."""
    ordered = sorted(genres)
    prompts = genre_prompts(ordered, dataset)
    embeddings = PromptEncoder().encode([prompts[genre] for genre in ordered])
    return ordered, prompts, embeddings
