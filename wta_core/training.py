"""Base-model pretraining and controlled, resumable LoRA fine-tuning.

Every adapter of a run is one arm of a controlled experiment. They share the
hyperparameters, the LoRA initialisation (`LoraConfig.init_seed`) and the number of
optimizer steps, and they differ only in which clips they see:

* Data order: epoch e of the stream is a permutation of all N clips of the full
  dataset, drawn from (seed, e). A subset walks the same stream and skips its
  non-members, and a batch is the next `batch_size` members, across epoch boundaries.
* Per-example randomness: the diffusion timestep, the noise and the prompt dropout of
  clip i in epoch e come from a generator seeded with (seed, i, e). A clip gets the
  same noise whether or not other clips were removed.

No random state carries over between steps, because every draw comes from a
generator seeded this way. A checkpoint therefore stores the LoRA weights, the AdamW
state and the stream position (epoch, index) instead of RNG states.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from wta_core.config import BaseTrainConfig, LoraConfig
from wta_core.diffusion import noisy_sample_and_target, training_scheduler
from wta_core.errors import ArtifactError, ConfigError, DatasetError
from wta_core.lora import attach_lora, save_adapter
from wta_core.model import NUM_TRAIN_TIMESTEPS, Denoiser, load_base_model

logger = logging.getLogger(__name__)

PROMPT_DROPOUT = 0.1  # share of examples trained on the unconditional embedding, for guidance
MAX_GRAD_NORM = 1.0
FINAL_LOSS_WINDOW = 20  # final_loss averages the losses of this many last steps

CHECKPOINT_FORMAT = "wta-lora-checkpoint-1"
_CHECKPOINT_PREFIX = "checkpoint-"

ProgressCallback = Callable[[int, float, float], None]  # (step, loss, steps per second)


def derive_seed(*parts: object) -> int:
    """Return a 63-bit generator seed that depends only on `parts`, stable across processes."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


class ExampleStream:
    """Position in the seeded stream of (clip index, epoch) pairs restricted to the members.

    `epoch` and `index` point at the next entry of epoch `epoch`'s permutation.
    """

    def __init__(self, member_mask: torch.Tensor, seed: int, epoch: int = 0, index: int = 0) -> None:
        self.member_mask = member_mask.to(torch.bool).cpu()
        self.seed = seed
        self.epoch = epoch
        self.index = index
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator("cpu").manual_seed(derive_seed("order", self.seed, epoch))
        return torch.randperm(len(self.member_mask), generator=generator).tolist()

    def next_batch(self, batch_size: int) -> list[tuple[int, int]]:
        """Return the next `batch_size` (clip index, epoch) pairs of members and advance."""
        batch: list[tuple[int, int]] = []
        while len(batch) < batch_size:
            if self.index == len(self._order):
                self.epoch += 1
                self.index = 0
                self._order = self._permutation(self.epoch)
            clip = self._order[self.index]
            self.index += 1
            if self.member_mask[clip]:
                batch.append((clip, self.epoch))
        return batch


def draw_example(seed: int, clip: int, epoch: int, latent_shape: tuple[int, ...]) -> tuple[int, bool, torch.Tensor]:
    """Return the (timestep, prompt dropped, noise [C, T]) of one example, drawn from (seed, clip, epoch)."""
    generator = torch.Generator("cpu").manual_seed(derive_seed("example", seed, clip, epoch))
    timestep = int(torch.randint(0, NUM_TRAIN_TIMESTEPS, (1,), generator=generator))
    dropped = bool(torch.rand(1, generator=generator) < PROMPT_DROPOUT)
    noise = torch.randn(latent_shape, generator=generator, dtype=torch.float32)
    return timestep, dropped, noise


def corrupt_clips(clips: torch.Tensor, mask: torch.Tensor, snr_db: float, seed: int) -> torch.Tensor:
    """Return a copy of `clips` [N, C, T] with Gaussian noise added to the clips selected by `mask` [N].

    A standardised clip has unit power, so the noise standard deviation is
    10 ** (-snr_db / 20). Each corrupted clip is standardised again to zero mean and
    unit variance, as every clip of the dataset is. The noise of clip i comes from
    (seed, i), so it does not depend on which other clips are corrupted.
    """
    corrupted = clips.clone()
    noise_std = 10.0 ** (-snr_db / 20.0)
    for clip in torch.nonzero(mask.to(torch.bool).cpu()).flatten().tolist():
        generator = torch.Generator("cpu").manual_seed(derive_seed("corrupt", seed, clip))
        noisy = clips[clip] + noise_std * torch.randn(clips[clip].shape, generator=generator, dtype=clips.dtype)
        corrupted[clip] = (noisy - noisy.mean()) / noisy.std().clamp_min(1e-8)
    return corrupted


def _batch_tensors(
    batch: list[tuple[int, int]], seed: int, clips: torch.Tensor, prompt_embeddings: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    latent_shape = tuple(clips.shape[1:])
    timesteps, noises, conditions = [], [], []
    for clip, epoch in batch:
        timestep, dropped, noise = draw_example(seed, clip, epoch, latent_shape)
        timesteps.append(timestep)
        noises.append(noise)
        conditions.append(torch.zeros_like(prompt_embeddings[clip]) if dropped else prompt_embeddings[clip])
    indices = torch.tensor([clip for clip, _ in batch])
    return clips[indices], torch.stack(noises), torch.tensor(timesteps, dtype=torch.int64), torch.stack(conditions)


def _training_step(
    denoiser: Denoiser,
    scheduler,
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    tensors: tuple[torch.Tensor, ...],
    device: torch.device,
) -> float:
    clean, noise, timesteps, conditions = (tensor.to(device) for tensor in tensors)
    noisy, target = noisy_sample_and_target(scheduler, clean, noise, timesteps)
    prediction = denoiser(noisy, timesteps, conditions)
    loss = torch.nn.functional.mse_loss(prediction, target)

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
    optimizer.step()
    return float(loss.detach().cpu())


def resolve_device(device: str) -> torch.device:
    """Return `device` as a torch.device after checking that it exists, or raise `ConfigError`."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'mps', got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available; use device='cpu'")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'mps', got {device!r}")
    return resolved


@contextlib.contextmanager
def deterministic_algorithms(num_threads: int | None = None) -> Iterator[None]:
    """Enable torch's deterministic algorithms (warn-only) and set the CPU thread count for the block.

    Both settings are restored afterwards. The flag makes torch choose a deterministic
    kernel where it has one and warn about operators that have none. CUDA would also
    need CUBLAS_WORKSPACE_CONFIG set before the first cuBLAS call, which this function
    does not set, so GPU runs warn instead of failing. `num_threads` None keeps torch's
    current thread count.
    """
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)
        if num_threads is not None:
            torch.set_num_threads(previous_threads)


def _check_dataset(clips: torch.Tensor, prompt_embeddings: torch.Tensor) -> None:
    if clips.ndim != 3:
        raise ValueError(f"clips must be [N, C, T], got shape {list(clips.shape)}")
    if prompt_embeddings.ndim != 2 or prompt_embeddings.shape[0] != clips.shape[0]:
        raise ValueError(
            f"prompt_embeddings must be [{clips.shape[0]}, D] to match the clips, got {list(prompt_embeddings.shape)}"
        )


def _final_loss(losses: list[float]) -> float:
    window = losses[-FINAL_LOSS_WINDOW:]
    return sum(window) / len(window) if window else float("nan")


def train_base(
    model: nn.Module,
    clips: torch.Tensor,
    prompt_embeddings: torch.Tensor,
    cfg: BaseTrainConfig,
    log: ProgressCallback | None = None,
    num_threads: int | None = None,
) -> dict:
    """Pretrain every trainable weight of `model` in place, on its device, and return the loss record.

    The data order and per-example draws follow the module's stream rules with all
    clips as members and `cfg.seed` as seed. `log` is called after each step with
    (step, loss, steps per second). `num_threads` sets torch's CPU threads for this
    call only. Returns {"losses", "final_loss", "steps", "seconds"}, where final_loss
    is the mean of the last 20 step losses. The model is left in eval mode.
    """
    _check_dataset(clips, prompt_embeddings)
    clips = clips.to(torch.float32).cpu()
    prompt_embeddings = prompt_embeddings.to(torch.float32).cpu()
    device = next(model.parameters()).device

    denoiser = Denoiser(model)
    scheduler = training_scheduler()
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=cfg.learning_rate, weight_decay=0.0)
    stream = ExampleStream(torch.ones(clips.shape[0], dtype=torch.bool), cfg.seed)

    logger.info(
        "training base model: %d clips, %d steps, batch %d, %d parameters",
        clips.shape[0], cfg.steps, cfg.batch_size, sum(p.numel() for p in parameters),
    )
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    with deterministic_algorithms(num_threads):
        for step in range(1, cfg.steps + 1):
            tensors = _batch_tensors(stream.next_batch(cfg.batch_size), cfg.seed, clips, prompt_embeddings)
            losses.append(_training_step(denoiser, scheduler, optimizer, parameters, tensors, device))
            if log is not None:
                log(step, losses[-1], step / (time.perf_counter() - start))
    model.eval()
    seconds = time.perf_counter() - start
    logger.info("base model trained: final loss %.4f in %.1f s", _final_loss(losses), seconds)
    return {"losses": losses, "final_loss": _final_loss(losses), "steps": cfg.steps, "seconds": seconds}


@dataclass
class TrainResult:
    """Outcome of one `train_lora` call."""

    final_loss: float  # mean loss of the last 20 steps
    losses: list[float]  # one loss per optimizer step, including steps before a resume
    steps: int
    seconds: float  # wall time of this call only
    sha256: str  # of adapter_model.safetensors
    device: str
    resumed_from_step: int  # 0 when training started from the LoRA initialisation
    adapter_folder: str
    members: int  # clips in the subset

    def to_dict(self) -> dict:
        return asdict(self)


def _tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _run_fingerprint(
    base: nn.Module, clips: torch.Tensor, prompt_embeddings: torch.Tensor, member_mask: torch.Tensor,
    noise_corrupt: torch.Tensor | None, lora: LoraConfig, seed: int,
) -> str:
    """Hash the inputs that determine the trained weights, so that a stale checkpoint is not resumed.

    Run-level LoraConfig fields that do not change this adapter (control seeds, dose
    fractions, ablation genre, checkpoint interval) are left out.
    """
    settings = {
        "format": CHECKPOINT_FORMAT,
        "seed": seed,
        "rank": lora.rank,
        "alpha": lora.alpha,
        "target_modules": list(lora.target_modules),
        "steps": lora.steps,
        "batch_size": lora.batch_size,
        "learning_rate": lora.learning_rate,
        "init_seed": lora.init_seed,
        "noise_snr_db": lora.noise_snr_db if noise_corrupt is not None else None,
        "prompt_dropout": PROMPT_DROPOUT,
        "max_grad_norm": MAX_GRAD_NORM,
    }
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in sorted(base.state_dict().items()):
        digest.update(name.encode())
        digest.update(_tensor_digest(tensor).encode())
    for tensor in (clips, prompt_embeddings, member_mask.to(torch.uint8)):
        digest.update(_tensor_digest(tensor).encode())
    digest.update(b"none" if noise_corrupt is None else _tensor_digest(noise_corrupt.to(torch.uint8)).encode())
    return digest.hexdigest()


def _checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"{_CHECKPOINT_PREFIX}{step:08d}.safetensors"


def _list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{_CHECKPOINT_PREFIX}*.safetensors"), reverse=True)


def _write_checkpoint(
    folder: Path, step: int, parameters: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
    stream: ExampleStream, losses: list[float], fingerprint: str,
) -> Path:
    from safetensors.torch import save_file

    tensors = {f"lora.{name}": parameter.detach().cpu().contiguous() for name, parameter in parameters.items()}
    state = optimizer.state_dict()["state"]
    for index, slots in state.items():
        for slot, value in slots.items():
            tensors[f"optimizer.{index}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "step": str(step),
        "epoch": str(stream.epoch),
        "index": str(stream.index),
        "losses": json.dumps(losses),
        "parameter_names": json.dumps(list(parameters)),
    }

    folder.mkdir(parents=True, exist_ok=True)
    final = _checkpoint_path(folder, step)
    temporary = folder / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    for older in _list_checkpoints(folder):
        if older != final:
            older.unlink(missing_ok=True)
    return final


def _read_checkpoint(
    path: Path, fingerprint: str, parameters: dict[str, nn.Parameter]
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return (metadata, tensors) of a checkpoint of this run, or raise `ArtifactError`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            # Copies get fresh, aligned memory (see wta_core.model.copy_into_fresh_memory).
            tensors = {key: handle.get_tensor(key).clone() for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"checkpoint {path} is unreadable ({error})") from error
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"checkpoint {path} has format {metadata.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    if metadata.get("fingerprint") != fingerprint:
        raise ArtifactError(f"checkpoint {path} belongs to another configuration, data subset or base model")

    try:
        position = {key: int(metadata[key]) for key in ("step", "epoch", "index")}
        losses = [float(loss) for loss in json.loads(metadata["losses"])]
    except (KeyError, ValueError, TypeError) as error:
        raise ArtifactError(f"checkpoint {path} has invalid metadata ({error})") from error
    if len(losses) != position["step"]:
        raise ArtifactError(f"checkpoint {path} records {len(losses)} losses for step {position['step']}")
    for name, parameter in parameters.items():
        stored = tensors.get(f"lora.{name}")
        if stored is None or stored.shape != parameter.shape:
            raise ArtifactError(f"checkpoint {path} lacks LoRA weight {name} with shape {list(parameter.shape)}")
    return {**position, "losses": losses}, tensors


def _restore_checkpoint(
    tensors: dict[str, torch.Tensor], parameters: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer
) -> None:
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(tensors[f"lora.{name}"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as error:
        raise ArtifactError(
            f"checkpoint optimizer state does not fit this model ({error}); delete the checkpoint folder and rerun"
        ) from error


def _latest_valid_checkpoint(folder: Path, fingerprint: str, parameters: dict[str, nn.Parameter]):
    for path in _list_checkpoints(folder):
        try:
            return _read_checkpoint(path, fingerprint, parameters)
        except ArtifactError as error:
            logger.warning("ignoring checkpoint: %s", error)
    return None


def _build_base(base: str | os.PathLike | Callable[[], nn.Module]) -> nn.Module:
    if callable(base) and not isinstance(base, (str, os.PathLike)):
        model = base()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the base model factory returned {type(model).__name__}, expected a StableAudioDiTModel")
        return model
    return load_base_model(base)


def train_lora(
    base: str | os.PathLike | Callable[[], nn.Module],
    clips: torch.Tensor,
    prompt_embeddings: torch.Tensor,
    member_mask: torch.Tensor,
    lora: LoraConfig,
    seed: int,
    out_folder: str | os.PathLike,
    checkpoint_folder: str | os.PathLike,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    noise_corrupt: torch.Tensor | None = None,
    num_threads: int | None = None,
) -> TrainResult:
    """Train one LoRA adapter on the clips selected by `member_mask` and save it to `out_folder`.

    `base` is a base model folder (`save_base_model`) or a function that returns a
    fresh base model. `clips` [N, C, T] and `prompt_embeddings` [N, D] are the FULL
    dataset, and `member_mask` [N] selects this subset. `noise_corrupt` [N], if given,
    selects clips to replace by noisy copies at `lora.noise_snr_db` (see `corrupt_clips`).

    A checkpoint is written every `lora.checkpoint_every` steps. A call finds the
    latest checkpoint of the same configuration, data and base model and resumes from
    it. On the CPU, a resumed run ends with the same weights, bit for bit, as an
    uninterrupted one if both parts ran with the same torch thread count. CPU kernels
    split sums by thread, so another count changes the last bits. `num_threads` sets
    that count for this call only, and None keeps torch's setting.

    The adapter folder appears only when complete, and then the checkpoints are
    deleted. `progress` is called after every step with (step, loss, steps per second).
    """
    _check_dataset(clips, prompt_embeddings)
    member_mask = torch.as_tensor(member_mask).to(torch.bool).cpu()
    if noise_corrupt is not None:
        noise_corrupt = torch.as_tensor(noise_corrupt).to(torch.bool).cpu()
    if member_mask.shape != (clips.shape[0],):
        raise ValueError(f"member_mask must have shape [{clips.shape[0]}], got {list(member_mask.shape)}")
    members = int(member_mask.sum())
    if members == 0:
        raise DatasetError("member_mask selects no clips; an adapter needs at least one training clip")
    if noise_corrupt is not None and noise_corrupt.shape != member_mask.shape:
        raise ValueError(f"noise_corrupt must have shape [{clips.shape[0]}], got {list(noise_corrupt.shape)}")

    torch_device = resolve_device(device)
    out_folder = Path(out_folder)
    checkpoint_folder = Path(checkpoint_folder)
    clips = clips.to(torch.float32).cpu()
    prompt_embeddings = prompt_embeddings.to(torch.float32).cpu()

    base_model = _build_base(base).cpu()
    fingerprint = _run_fingerprint(base_model, clips, prompt_embeddings, member_mask, noise_corrupt, lora, seed)
    if noise_corrupt is not None:
        clips = corrupt_clips(clips, noise_corrupt, lora.noise_snr_db, seed)

    peft_model = attach_lora(base_model, lora).to(torch_device)
    parameters = {name: p for name, p in peft_model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(list(parameters.values()), lr=lora.learning_rate, weight_decay=0.0)
    denoiser = Denoiser(peft_model)
    scheduler = training_scheduler()

    stream = ExampleStream(member_mask, seed)
    losses: list[float] = []
    resumed_from = 0
    found = _latest_valid_checkpoint(checkpoint_folder, fingerprint, parameters)
    if found is not None:
        position, tensors = found
        _restore_checkpoint(tensors, parameters, optimizer)
        resumed_from = position["step"]
        stream = ExampleStream(member_mask, seed, epoch=position["epoch"], index=position["index"])
        losses = position["losses"]
        logger.info("resuming adapter %s from checkpoint step %d", out_folder.name, resumed_from)

    logger.info(
        "training adapter %s: %d of %d clips, steps %d to %d, batch %d, device %s",
        out_folder.name, members, clips.shape[0], resumed_from + 1, lora.steps, lora.batch_size, torch_device,
    )
    start = time.perf_counter()
    peft_model.train()
    with deterministic_algorithms(num_threads):
        for step in range(resumed_from + 1, lora.steps + 1):
            tensors = _batch_tensors(stream.next_batch(lora.batch_size), seed, clips, prompt_embeddings)
            losses.append(
                _training_step(denoiser, scheduler, optimizer, list(parameters.values()), tensors, torch_device)
            )
            if step % lora.checkpoint_every == 0 and step < lora.steps:
                _write_checkpoint(checkpoint_folder, step, parameters, optimizer, stream, losses, fingerprint)
            if progress is not None:
                progress(step, losses[-1], (step - resumed_from) / (time.perf_counter() - start))
    peft_model.eval()

    digest = save_adapter(peft_model, out_folder)
    for path in _list_checkpoints(checkpoint_folder):
        path.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    logger.info(
        "adapter %s trained: final loss %.4f, %.1f s, sha256 %s",
        out_folder.name, _final_loss(losses), seconds, digest[:12],
    )
    return TrainResult(
        final_loss=_final_loss(losses),
        losses=losses,
        steps=lora.steps,
        seconds=seconds,
        sha256=digest,
        device=str(torch_device),
        resumed_from_step=resumed_from,
        adapter_folder=str(out_folder),
        members=members,
    )
