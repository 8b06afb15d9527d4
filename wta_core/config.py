"""Typed configuration for every stage, and the named presets built from it.

Each stage reads one frozen dataclass. A preset is one named `RunConfig`, defined once
in `PRESETS`; nothing else in the code base repeats these values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from wta_core.errors import ConfigError


@dataclass(frozen=True)
class AudioConfig:
    """Feature extraction shared by the dataset, the model latent and rendering."""

    sample_rate: int = 16_000  # Hz, after resampling
    n_fft: int = 1024
    hop_length: int = 512  # samples between frames
    n_mels: int = 64  # latent channels of the embedded model
    clip_frames: int = 64  # latent frames of the embedded model

    @property
    def clip_samples(self) -> int:
        # torchaudio's MelSpectrogram with center=True yields 1 + samples // hop frames.
        return self.hop_length * (self.clip_frames - 1)

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.sample_rate


@dataclass(frozen=True)
class DataConfig:
    """Which clips the dataset asset keeps."""

    max_genres: int | None = None  # None keeps every genre; else the first ones in sorted order
    clips_per_genre: int = 40  # upper bound per genre; real data may hold fewer
    pretrain_clips: int = 240  # embedded corpus only: clips for the base model
    min_track_seconds: float = 1.0  # shorter files are skipped as too short


@dataclass(frozen=True)
class ModelConfig:
    """Denoiser architecture: diffusers' StableAudioDiTModel."""

    kind: str = "embedded"  # "embedded" (tiny DiT on log-mel) or "stable-audio" (local checkpoint)
    num_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_attention_heads: int = 2
    attention_head_dim: int = 32
    cross_attention_dim: int = 128
    time_proj_dim: int = 64
    checkpoint_path: str | None = None  # Stable Audio Open folder for kind="stable-audio"


@dataclass(frozen=True)
class BaseTrainConfig:
    """Pretraining of the embedded base model on the pretraining portion."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class LoraConfig:
    """LoRA fine-tuning, identical for every subset of one run."""

    rank: int = 8
    alpha: int = 8
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    steps: int = 200  # optimizer steps, the same for every subset
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0  # training seed of the full and leave-one-out adapters
    init_seed: int = 1234  # seed of the LoRA initialisation, shared by all adapters
    control_seeds: tuple[int, ...] = (1, 2, 3)  # full data, other training seeds
    dose_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    ablation_genre: str | None = None  # None: the first genre in sorted order
    noise_snr_db: float = 0.0  # signal-to-noise ratio of the noise ablation
    checkpoint_every: int = 50  # optimizer steps between resumable checkpoints


@dataclass(frozen=True)
class SampleConfig:
    """Generation of the trajectories that are compared."""

    steps: int = 50  # denoising steps
    seeds: tuple[int, ...] = (0, 1, 2)
    guidance_scale: float = 3.0  # classifier-free guidance; 1.0 disables it
    store_dtype: str = "float16"


@dataclass(frozen=True)
class ScoreConfig:
    """Per-step Wasserstein distances and their weighted sum."""

    method: str = "exact"  # exact | emd | sliced | sinkhorn
    weighting: str = "exponential"  # uniform | linear | exponential
    decay: float = 5.0  # exponential rate over the normalised step index
    # The latent is what the attribution is defined on: the state of the generation after each
    # step. The predicted clean sample is scored and stored too, for comparison.
    target: str = "latent"  # latent | predicted_clean
    sliced_projections: int = 256
    sinkhorn_reg: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds of the eleven validation tests, fixed before a run."""

    scm_parent_recovery: float = 1.0  # share of generations, target 100%
    scm_false_positive_rate: float = 0.0
    granger_lag_share: float = 1.0
    granger_p: float = 0.01
    noise_rank: int = 1
    dose_pearson_r: float = 0.97
    permutation_p: float = 0.001
    permutation_resamples: int = 9999
    cohens_d: float = 0.8
    loo_top1_share: float = 1.0
    independence_share: float = 0.9
    independence_quantile: float = 0.95  # noise-floor quantile that unmatched scores stay under
    proximity_spearman_p: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; a preset is one instance of this."""

    name: str
    audio: AudioConfig = field(default_factory=AudioConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    base: BaseTrainConfig = field(default_factory=BaseTrainConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    lds_subsets: int = 16  # random half-subsets for the linear datamodeling score

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Rebuild a config written by `to_dict` (lists become tuples again) and validate it."""
        sections = {}
        for item in dataclasses.fields(cls):
            value = values.get(item.name)
            if isinstance(value, dict):
                section_type = type(getattr(PRESETS[DEFAULT_PRESET], item.name))
                value = section_type(**{key: tuple(v) if isinstance(v, list) else v for key, v in value.items()})
            if value is not None:
                sections[item.name] = value
        return validate_config(cls(**sections))


PRESETS: dict[str, RunConfig] = {
    # The whole pipeline in minutes on two CPU cores, for the test suite.
    "smoke": RunConfig(
        name="smoke",
        data=DataConfig(
            max_genres=3,
            clips_per_genre=8,
            pretrain_clips=24,
        ),
        base=BaseTrainConfig(steps=40, batch_size=8),
        lora=LoraConfig(steps=24, batch_size=8, checkpoint_every=4),
        sample=SampleConfig(steps=8, seeds=(0, 1)),
        validation=ValidationConfig(permutation_resamples=999),
        lds_subsets=3,
    ),
    # The embedded main job: ten styles of real music, sized so scores mean something.
    "demo": RunConfig(name="demo"),
    # Reference GPU configuration on real GTZAN with Stable Audio Open.
    # Roughly 80 A100 GPU-hours (estimate, not measured here).
    "loo-baseline": RunConfig(
        name="loo-baseline",
        audio=AudioConfig(sample_rate=44_100),
        data=DataConfig(clips_per_genre=100),
        model=ModelConfig(kind="stable-audio"),
        lora=LoraConfig(
            rank=16,
            alpha=16,
            steps=500 * 90 // 8,  # 500 epochs over 90 tracks, batch 8
            batch_size=8,
            learning_rate=1e-4,
            checkpoint_every=500,
        ),
        sample=SampleConfig(steps=100, seeds=(0, 1, 2, 3, 4), guidance_scale=7.0),
        lds_subsets=64,
    ),
}

DEFAULT_PRESET = "demo"


def validate_config(config: RunConfig) -> RunConfig:
    """Raise `ConfigError` naming the first out-of-range value; return the config."""
    problems: list[str] = []

    def require(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    require(config.audio.sample_rate > 0, f"audio.sample_rate must be > 0, got {config.audio.sample_rate}")
    require(config.audio.clip_frames >= 2, f"audio.clip_frames must be >= 2, got {config.audio.clip_frames}")
    require(config.data.max_genres is None or config.data.max_genres >= 2,
            f"data.max_genres must be None or >= 2, got {config.data.max_genres}")
    require(config.data.clips_per_genre >= 1, f"data.clips_per_genre must be >= 1, got {config.data.clips_per_genre}")
    require(config.base.steps >= 1, f"base.steps must be >= 1, got {config.base.steps}")
    require(config.base.learning_rate > 0, f"base.learning_rate must be > 0, got {config.base.learning_rate}")
    require(config.lora.steps >= 1, f"lora.steps must be >= 1, got {config.lora.steps}")
    require(config.lora.rank >= 1, f"lora.rank must be >= 1, got {config.lora.rank}")
    require(config.lora.batch_size >= 1, f"lora.batch_size must be >= 1, got {config.lora.batch_size}")
    require(config.lora.learning_rate > 0, f"lora.learning_rate must be > 0, got {config.lora.learning_rate}")
    require(config.lora.checkpoint_every >= 1, f"lora.checkpoint_every must be >= 1, got {config.lora.checkpoint_every}")
    for fraction in config.lora.dose_fractions:
        require(0.0 < fraction < 1.0, f"lora.dose_fractions values must lie in (0, 1), got {fraction}")
    require(config.sample.steps >= 1, f"sample.steps must be >= 1, got {config.sample.steps}")
    require(len(config.sample.seeds) >= 1, "sample.seeds must name at least one seed")
    require(config.sample.store_dtype in ("float16", "float32"),
            f"sample.store_dtype must be float16 or float32, got {config.sample.store_dtype!r}")
    require(config.score.method in ("exact", "emd", "sliced", "sinkhorn"),
            f"score.method must be exact, emd, sliced or sinkhorn, got {config.score.method!r}")
    require(config.score.weighting in ("uniform", "linear", "exponential"),
            f"score.weighting must be uniform, linear or exponential, got {config.score.weighting!r}")
    require(config.score.target in ("latent", "predicted_clean"),
            f"score.target must be latent or predicted_clean, got {config.score.target!r}")
    require(config.lds_subsets >= 0, f"lds_subsets must be >= 0, got {config.lds_subsets}")

    if problems:
        raise ConfigError(
            f"preset {config.name!r} has invalid values: " + "; ".join(problems)
            + ". Fix the values in wta_core/config.py or the run config."
        )
    return config


def get_preset(name: str) -> RunConfig:
    """Return the validated preset called `name`, or raise `ConfigError` listing the known ones."""
    if name not in PRESETS:
        known = ", ".join(sorted(PRESETS))
        raise ConfigError(f"unknown WTA_PRESET {name!r}; choose one of: {known}")
    return validate_config(PRESETS[name])


def replace(config: RunConfig, **sections) -> RunConfig:
    """Return a validated copy of `config` with whole sections or top-level fields replaced."""
    return validate_config(dataclasses.replace(config, **sections))
