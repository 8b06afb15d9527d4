"""LoRA adapters on the denoiser through peft, with checked storage.

diffusers 0.42 gives `StableAudioDiTModel` no `PeftAdapterMixin`, so adapters are
attached with `peft.get_peft_model` and loaded with `PeftModel.from_pretrained`.
An adapter folder contains peft's `adapter_config.json` and `adapter_model.safetensors`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import torch
from torch import nn

from wta_core.config import LoraConfig
from wta_core.errors import ArtifactError
from wta_core.model import PICKLE_SUFFIXES, atomic_folder, reject_pickle_file

logger = logging.getLogger(__name__)

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
_KEY_PREFIX = "base_model.model."  # prefix of every key in a saved peft state dict


def peft_lora_config(lora: LoraConfig):
    """Translate `lora` into a `peft.LoraConfig` (no dropout, no bias, B initialised to zero)."""
    import peft

    return peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        target_modules=list(lora.target_modules),
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=True,
    )


def attach_lora(model: nn.Module, lora: LoraConfig):
    """Wrap `model` in a `PeftModel` with LoRA layers drawn from `lora.init_seed`. Modifies `model` in place.

    peft's default initialisation (A as nn.Linear's default, B zero) is redrawn from a
    CPU generator seeded with `lora.init_seed`, in module-name order. Every adapter of a
    run therefore starts from the same weights on any device. The global CPU RNG state
    is the same afterwards as before.
    """
    import peft

    if isinstance(model, peft.PeftModel) or any(hasattr(module, "lora_A") for module in model.modules()):
        raise ValueError("attach_lora needs a model without adapters; build or load a fresh base model")

    with torch.random.fork_rng(devices=[]):
        peft_model = peft.get_peft_model(model, peft_lora_config(lora))

    generator = torch.Generator("cpu").manual_seed(lora.init_seed)
    lora_layers = sorted(
        (name, module) for name, module in peft_model.named_modules() if isinstance(module, peft.tuners.lora.LoraLayer)
    )
    with torch.no_grad():
        for _, layer in lora_layers:
            for adapter_name in layer.lora_A:
                weight_a = layer.lora_A[adapter_name].weight
                initial_a = torch.empty(weight_a.shape, dtype=torch.float32)
                nn.init.kaiming_uniform_(initial_a, a=math.sqrt(5), generator=generator)
                weight_a.copy_(initial_a)
                layer.lora_B[adapter_name].weight.zero_()
    return peft_model


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_adapter(peft_model, folder: str | os.PathLike) -> str:
    """Write the adapter of `peft_model` to `folder`, replacing it atomically; return the weights' sha256."""
    folder = Path(folder)
    with atomic_folder(folder) as temporary:
        peft_model.save_pretrained(str(temporary), safe_serialization=True)
        for name in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME):
            if not (temporary / name).is_file():
                raise ArtifactError(f"peft save_pretrained wrote no {name} into {temporary}; check the peft version")
        digest = sha256_file(temporary / ADAPTER_WEIGHTS_NAME)
    logger.info("saved adapter to %s (sha256 %s)", folder, digest[:12])
    return digest


def _read_adapter_config(folder: Path) -> dict:
    path = folder / ADAPTER_CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"adapter config {path} is unreadable ({error}); retrain the adapter") from error
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ArtifactError(f"adapter config {path} does not describe a LoRA adapter (peft_type LORA); retrain the adapter")
    return config


def _read_adapter_shapes(path: Path) -> dict[str, list[int]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ArtifactError(
            f"adapter weights {path} are truncated or corrupt ({error}); delete the adapter folder and retrain it"
        ) from error


def _check_adapter_fits(base_model: nn.Module, config: dict, shapes: dict[str, list[int]], folder: Path) -> None:
    """Raise `ArtifactError` unless every target module exists in `base_model` with the saved shapes."""
    modules = dict(base_model.named_modules())
    targets = config.get("target_modules") or []
    # A regular expression, or a layer filter, is left to peft and the check after loading.
    if isinstance(targets, list) and config.get("layers_to_transform") is None and not config.get("exclude_modules"):
        for target in targets:
            matches = [name for name in modules if name == target or name.endswith("." + target)]
            if not matches:
                raise ArtifactError(
                    f"adapter {folder} targets module {target!r}, which the base model lacks; "
                    "load it onto the base model it was trained on"
                )
            for name in matches:
                for part in ("lora_A", "lora_B"):
                    key = f"{_KEY_PREFIX}{name}.{part}.weight"
                    if isinstance(modules[name], nn.Linear) and key not in shapes:
                        raise ArtifactError(
                            f"adapter {folder} lacks tensor {key}, which its config requires; retrain the adapter"
                        )

    for key, shape in sorted(shapes.items()):
        for part, axis in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not (key.startswith(_KEY_PREFIX) and key.endswith(part)):
                continue
            module_name = key[len(_KEY_PREFIX) : -len(part)]
            try:
                module = base_model.get_submodule(module_name)
            except AttributeError:
                raise ArtifactError(
                    f"adapter {folder} has weights for module {module_name!r}, which the base model lacks; "
                    "load it onto the base model it was trained on"
                ) from None
            expected = module.in_features if axis == 1 else module.out_features
            if len(shape) != 2 or shape[axis] != expected:
                raise ArtifactError(
                    f"adapter {folder} weight {key} has shape {shape}, but module {module_name!r} of the base model "
                    f"needs size {expected} on axis {axis}; load it onto the base model it was trained on"
                )


def load_adapter(base_model: nn.Module, folder: str | os.PathLike, expected_sha256: str | None = None):
    """Load the adapter in `folder` onto `base_model` with `PeftModel.from_pretrained`. Modifies `base_model` in place.

    Checks run before peft touches the model, in this order: folder and files present,
    no pickle weights, sha256 equal to `expected_sha256` when given, safetensors
    header readable, target modules and weight shapes matching `base_model`.
    Raises `UnsafeFileError` for pickle weights and `ArtifactError` for the others.
    """
    import peft

    folder = Path(folder)
    reject_pickle_file(folder, "adapter path")
    if not folder.is_dir():
        raise ArtifactError(f"adapter folder {folder} not found; train the adapter first")

    weights = folder / ADAPTER_WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(path for path in folder.iterdir() if path.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            reject_pickle_file(pickles[0], "adapter weights")
        raise ArtifactError(f"adapter folder {folder} has no {ADAPTER_WEIGHTS_NAME}; retrain the adapter")
    if not (folder / ADAPTER_CONFIG_NAME).is_file():
        raise ArtifactError(f"adapter folder {folder} has no {ADAPTER_CONFIG_NAME}; retrain the adapter")

    if expected_sha256 is not None:
        actual = sha256_file(weights)
        if actual != expected_sha256:
            raise ArtifactError(
                f"adapter weights {weights} have sha256 {actual}, expected {expected_sha256}; "
                "the file changed after training, so retrain the adapter"
            )

    config = _read_adapter_config(folder)
    shapes = _read_adapter_shapes(weights)
    if isinstance(base_model, peft.PeftModel) or any(hasattr(module, "lora_A") for module in base_model.modules()):
        raise ValueError("load_adapter needs a base model without adapters; build or load a fresh base model")
    _check_adapter_fits(base_model, config, shapes, folder)

    try:
        peft_model = peft.PeftModel.from_pretrained(base_model, str(folder), is_trainable=False)
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        raise ArtifactError(
            f"adapter {folder} cannot be loaded onto the base model ({type(error).__name__}: {error}); "
            "load it onto the base model it was trained on, or retrain it"
        ) from error

    # peft only warns about injected LoRA weights that the file lacks and leaves them
    # at their initial values, which would silently give another model.
    injected = {
        key.replace(".default.", ".")
        for key in peft_model.state_dict()
        if ".lora_A." in key or ".lora_B." in key
    }
    missing = sorted(injected - set(shapes))
    if missing:
        raise ArtifactError(
            f"adapter weights {weights} lack {len(missing)} LoRA tensors that its config requires "
            f"(first: {missing[0]}); retrain the adapter"
        )
    return peft_model.eval()
