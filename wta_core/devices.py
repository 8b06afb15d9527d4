"""Choice of the torch device that trains and samples."""

from __future__ import annotations

import torch

from wta_core.training import resolve_device


def pick_device(name: str = "auto") -> str:
    """Return `name` checked, or for "auto" the first of CUDA, MPS and the CPU that exists."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return str(resolve_device(name))
