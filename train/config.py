"""StyleGAN configuration as plain data: model shape, training hyper-parameters and presets."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from gen.runtime.errors import GenError

VARIANTS = ("stylegan2", "stylegan1")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the shapes of G and D: a checkpoint is only valid for an equal config."""

    resolution: int = 64
    variant: str = "stylegan2"  # stylegan2: modulated convs; stylegan1: AdaIN
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    channel_base: int = 16384  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    mbstd_group: int = 4
    conv_clamp: float | None = None  # clip every conv layer's output to +-this (NVlabs' official configs: 256)
    c_dim: int = 0  # classes of a class-conditional model (imported from NVlabs); 0: unconditional

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 8 or r > 1024 or r & (r - 1):
            raise GenError(f"resolution must be a power of two from 8 to 1024, got {r}")
        if self.variant not in VARIANTS:
            raise GenError(f"unknown variant '{self.variant}'; choose one of {', '.join(VARIANTS)}")
        if self.z_dim < 1 or self.w_dim < 1:
            raise GenError(f"z_dim and w_dim must be at least 1, got {self.z_dim} and {self.w_dim}")
        if self.mapping_layers < 1:
            raise GenError("mapping_layers must be at least 1")
        if self.c_dim < 0:
            raise GenError(f"c_dim must be 0 (unconditional) or a number of classes, got {self.c_dim}")
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise GenError(f"conv_clamp must be positive or None, got {self.conv_clamp}")

    @property
    def log2_res(self) -> int:
        return int(math.log2(self.resolution))

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)


@dataclass(frozen=True)
class TrainConfig:
    batch: int = 32
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    ema_kimg: float = 10.0  # half-life of the generator EMA, in thousands of images
    ema_rampup: float | None = 0.05  # EMA half-life limited to this fraction of images seen so far
    ada_target: float = 0.6
    ada_kimg: float = 100.0  # images (thousands) for p to move from 0 to 1 at full speed
    ada_interval: int = 4
    augment: bool = True
    xflip: bool = True
    snapshot_kimg: float = 2.0
    kimg: float = 50.0
    mixed_precision: bool = True  # bf16 autocast on CUDA; ignored on CPU


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS: dict[str, Preset] = {
    # Seconds on a CPU: for tests and the quick start.
    "tiny": Preset(
        ModelConfig(resolution=32, z_dim=64, w_dim=64, mapping_layers=2, channel_base=1024, channel_max=64),
        TrainConfig(batch=8, r1_gamma=0.1, ema_kimg=0.5, ada_kimg=20, snapshot_kimg=0.5, kimg=1),
    ),
    # 64x64 emoji on a CPU in hours.
    "small": Preset(
        ModelConfig(resolution=64, z_dim=128, w_dim=128, mapping_layers=4, channel_base=4096, channel_max=128),
        TrainConfig(batch=16, r1_gamma=0.2, ema_kimg=2.5, ada_kimg=50, snapshot_kimg=5, kimg=200),
    ),
    # Close to the paper's 256x256 config (NVlabs 'paper256'), for a GPU.
    "paper256": Preset(
        ModelConfig(resolution=256, z_dim=512, w_dim=512, mapping_layers=8, channel_base=16384, channel_max=512),
        TrainConfig(batch=64, r1_gamma=1.0, ema_kimg=20, ada_kimg=500, snapshot_kimg=40, kimg=25000),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise GenError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def to_json(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def model_from_json(d: dict) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(d) - known
    if unknown:
        raise GenError(f"checkpoint model config has unknown fields {sorted(unknown)}; is it from a newer gen?")
    return ModelConfig(**d)


def train_from_json(d: dict) -> TrainConfig:
    d = dict(d)
    d["betas"] = tuple(d.get("betas", (0.0, 0.99)))
    return TrainConfig(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}})


# Settings of `gen project` (train/projector.py); here, torch-free, so the CLI reads its defaults.
@dataclass(frozen=True)
class ProjectSettings:
    steps: int = 500
    w_plus: bool = False  # one w per style layer (more faithful, less editable) instead of one shared w
    lr: float = 0.1
    lr_rampup: float = 0.05  # share of the steps spent ramping the learning rate up
    lr_rampdown: float = 0.25  # share at the end spent easing it down to 0
    w_noise: float = 0.05  # noise added to w at the start, in units of w's spread around w_avg
    w_noise_ramp: float = 0.75  # share of the steps over which that noise fades out
    perceptual_layers: tuple[str, ...] = ("block1", "block3", "block6")  # 1/4, 1/8, 1/16 size
    pixel_weight: float = 1.0
    optimize_noise: bool = False
    noise_reg: float = 1e4

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise GenError(f"--steps must be at least 1 (got {self.steps})")
