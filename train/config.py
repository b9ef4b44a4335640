"""StyleGAN configuration as plain data: model shape, training hyper-parameters and presets."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from gen.runtime.bundle import STYLEGAN3 as VARIANTS3
from gen.runtime.errors import GenError

VARIANTS = ("stylegan2", "stylegan1")
_LARGE = 10**6  # the bound of a field with none of its own (kimg, intervals): finite, so inf is refused


def is_number(value, kind: type = float) -> bool:
    """An int (kind int), or an int or a float (kind float); never a bool, which Python counts as an int."""
    return isinstance(value, int if kind is int else (int, float)) and not isinstance(value, bool)


def check_resolution(r) -> None:
    if not is_number(r, int) or r < 8 or r > 1024 or r & (r - 1):
        raise GenError(f"resolution must be a power of two from 8 to 1024, got {r!r}")


def check_fields(values: dict, bounds: dict[str, tuple[type, float, float]]) -> None:
    """Each value's type and range (a missing one is None, refused): a config also comes from a checkpoint's
    metadata, which may be damaged or hostile ('64', 0, a w_dim that allocates terabytes), so every value is
    checked where it enters."""
    for name, (kind, least, most) in bounds.items():
        value = values.get(name)
        if kind is bool:
            ok = isinstance(value, bool)
        else:  # (a range check refuses NaN and infinity too: the bounds are finite)
            ok = is_number(value, kind) and least <= value <= most
        if not ok:
            what = {bool: "true or false", int: f"a whole number from {least} to {most}",
                    float: f"a number from {least:g} to {most:g}"}[kind]
            raise GenError(f"{name} must be {what}, got {value!r}")


# Far above NVlabs' models (z_dim, w_dim 512; channels 512; 8 mapping layers; ImageNet's 1000 classes), and
# low enough that no config within them needs more than a few GB.
MODEL_BOUNDS = {"z_dim": (int, 1, 2048), "w_dim": (int, 1, 2048), "mapping_layers": (int, 1, 32),
                "mapping_lr_mul": (float, 1e-6, 1e3), "channel_base": (int, 1, 2**17), "channel_max": (int, 1, 1024),
                "mbstd_group": (int, 1, 1024), "c_dim": (int, 0, 10_000)}


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
        check_resolution(r)
        if self.variant not in VARIANTS:
            raise GenError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS + VARIANTS3)}")
        check_fields(vars(self), MODEL_BOUNDS)
        if self.channel_base < r:  # every layer needs a channel: at resolution r, channel_base // r
            raise GenError(f"channel_base must be at least the resolution ({r}), got {self.channel_base}")
        clamp = self.conv_clamp
        if clamp is not None and not (is_number(clamp) and 0 < clamp <= _LARGE):
            raise GenError(f"conv_clamp must be positive or None, got {clamp!r}")

    @property
    def log2_res(self) -> int:
        return int(math.log2(self.resolution))

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)


# beyond NVlabs' configs (14 layers, margins of 10, cutoff 2), and small enough that no layout needs terabytes
BOUNDS3 = {**{k: MODEL_BOUNDS[k] for k in ("z_dim", "w_dim", "mapping_layers", "mapping_lr_mul", "c_dim")},
           "channel_base": (int, 1, 2**18), "channel_max": (int, 1, 2048), "num_layers": (int, 2, 64),
           "num_critical": (int, 1, 63), "first_cutoff": (float, 0.5, 64), "first_stopband": (float, 0.5, 128),
           "last_stopband_rel": (float, 1, 4), "margin_size": (int, 0, 64), "output_scale": (float, 1e-3, 1e3),
           "filter_size": (int, 1, 16), "lrelu_upsampling": (int, 1, 4)}


@dataclass(frozen=True)
class Stylegan3Config:
    """A StyleGAN3 generator's layout (NVlabs' names in comments where ours differ)."""

    resolution: int = 256
    variant: str = "stylegan3-t"
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    mapping_layers: int = 2
    mapping_lr_mul: float = 0.01
    channel_base: int = 32768  # R: doubled (65536)
    channel_max: int = 512  # R: doubled (1024)
    num_layers: int = 14  # synthesis layers, Fourier features and ToRGB aside
    num_critical: int = 2  # critically sampled layers at the end
    first_cutoff: float = 2.0
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    margin_size: int = 10  # pixels computed outside the picture on each side
    output_scale: float = 0.25
    filter_size: int = 6  # taps per unit of the lower sampling rate, when resampling
    lrelu_upsampling: int = 2  # the leaky ReLU runs at this multiple of the sampling rate
    conv_clamp: float | None = 256.0

    @property
    def conv_kernel(self) -> int:
        return 1 if self.variant == "stylegan3-r" else 3

    @property
    def radial_filters(self) -> bool:
        return self.variant == "stylegan3-r"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS3:
            raise GenError(f"unknown StyleGAN3 variant {self.variant!r}; choose one of {', '.join(VARIANTS3)}")
        check_resolution(self.resolution)
        check_fields(vars(self), BOUNDS3)
        if not 1 <= self.num_critical < self.num_layers:
            raise GenError(f"num_critical must be 1..num_layers - 1, got {self.num_critical} of {self.num_layers}")
        clamp = self.conv_clamp
        if clamp is not None and not (is_number(clamp) and 0 < clamp <= _LARGE):
            raise GenError(f"conv_clamp must be positive or None, got {clamp!r}")


# A batch of 0 would train forever (the image count never grows), an ada_kimg of 0 divide by zero.
TRAIN_BOUNDS = {"batch": (int, 1, 65536), "g_lr": (float, 0, 1), "d_lr": (float, 0, 1), "r1_gamma": (float, 0, 1e4),
                "r1_interval": (int, 1, _LARGE), "pl_weight": (float, 0, 1e4), "pl_interval": (int, 1, _LARGE),
                "pl_batch_shrink": (int, 1, 65536), "pl_decay": (float, 0, 1), "style_mixing": (float, 0, 1),
                "ema_kimg": (float, 0, _LARGE), "ada_target": (float, -1, 1), "ada_kimg": (float, 1e-6, _LARGE),
                "ada_interval": (int, 1, _LARGE), "snapshot_kimg": (float, 0, _LARGE), "kimg": (float, 0, _LARGE),
                "blur_sigma": (float, 0, 100), "blur_kimg": (float, 0, _LARGE),
                **{name: (bool, 0, 1) for name in ("augment", "xflip", "mixed_precision")}}


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
    blur_sigma: float = 0.0  # D sees reals and fakes blurred by a Gaussian of this sigma (pixels) at the start...
    blur_kimg: float = 0.0  # ...fading linearly to none over this many kimg (StyleGAN3-R: 10, batch * 200 / 32)

    def __post_init__(self) -> None:
        check_fields(vars(self), TRAIN_BOUNDS)
        betas = self.betas
        if not (isinstance(betas, tuple) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas)):
            raise GenError(f"betas must be two numbers from 0 to below 1, got {betas!r}")
        rampup = self.ema_rampup
        if rampup is not None and not (is_number(rampup) and 0 <= rampup <= 1):
            raise GenError(f"ema_rampup must be a number from 0 to 1 or None, got {rampup!r}")


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


def check_variant(variant: str) -> None:
    if variant not in VARIANTS + VARIANTS3:
        raise GenError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS + VARIANTS3)}")


def stylegan3_config(model: ModelConfig, variant: str) -> Stylegan3Config:
    """The StyleGAN3 generator `--variant stylegan3-t|r` trains for a preset's (StyleGAN2) model config, as NVlabs'
    train.py configures it: the preset's resolution, z_dim, w_dim and channel_base/channel_max (both doubled for
    R, whose 1x1 convs need the width), a 2-layer mapping network, NVlabs' filters, clamp and output scale.

    The channel_base keeps its meaning: StyleGAN3 gives a layer of cutoff f min(channel_base / 2 / f, channel_max)
    channels, and the last layers' cutoff is resolution / 2, so the pictures' finest scale gets
    channel_base / resolution channels in both, as a StyleGAN2 layer at that resolution does.

    Layers: NVlabs' 14 (2 of them critically sampled) and margins of 10 pixels, from 256 pixels up (every model they
    released). Smaller pictures span fewer octaves of cutoff (from 2 to resolution / 2: log2(resolution) - 2 of
    them), so they get two layers an octave (32 px: 6 layers, 64: 8, 128: 10; at least 4) and margins of an eighth
    of the picture (32 px: 4): tiny's StyleGAN3-T (6 layers at 32 px) takes about a second a step of 8 on one CPU
    thread, where 14 layers with margins of 10 take five."""
    check_variant(variant)
    if variant not in VARIANTS3:
        raise GenError(f"{variant!r} is not a StyleGAN3 variant; choose one of {', '.join(VARIANTS3)}")
    r = model.resolution
    small = r < 256
    double = 2 if variant == "stylegan3-r" else 1
    return Stylegan3Config(
        resolution=r, variant=variant, z_dim=model.z_dim, w_dim=model.w_dim, c_dim=model.c_dim, mapping_layers=2,
        mapping_lr_mul=model.mapping_lr_mul, channel_base=model.channel_base * double,
        channel_max=model.channel_max * double,
        num_layers=max(2 * model.log2_res - 4, 4) if small else 14, margin_size=min(r // 8, 10) if small else 10)


def discriminator_config(model: ModelConfig | Stylegan3Config) -> ModelConfig:
    """The config of the (StyleGAN2) discriminator a model trains against: its own for StyleGAN2/1; for StyleGAN3,
    NVlabs' choice, derived from the generator's config alone (so a resumed run rebuilds the same D): the same
    resolution and conv_clamp, the channel_base/channel_max before R's doubling, minibatch std groups of 4."""
    if isinstance(model, ModelConfig):
        return model
    undouble = 2 if model.variant == "stylegan3-r" else 1
    return ModelConfig(resolution=model.resolution, z_dim=model.z_dim, w_dim=model.w_dim,
                       channel_base=max(model.channel_base // undouble, 1),
                       channel_max=max(model.channel_max // undouble, 1), mbstd_group=4, conv_clamp=model.conv_clamp)


def model_with(base: ModelConfig | Stylegan3Config, overrides: dict) -> ModelConfig | Stylegan3Config:
    """A preset's (or a run's) model config with fields overridden: a variant stylegan3-t|r turns a StyleGAN2
    preset into its StyleGAN3 (stylegan3_config, after the other overrides, so --resolution sets its layers)."""
    overrides = dict(overrides)
    variant = overrides.get("variant")
    if variant is not None:
        check_variant(variant)
    if isinstance(base, ModelConfig) and variant in VARIANTS3:
        del overrides["variant"]
        return stylegan3_config(dataclasses.replace(base, **overrides), variant)
    if isinstance(base, Stylegan3Config) and variant in VARIANTS:
        raise GenError(f"a StyleGAN3 ({base.variant}) model cannot become {variant}")
    return dataclasses.replace(base, **overrides)


def stylegan3_train(cfg: TrainConfig, variant: str) -> TrainConfig:
    """NVlabs' training settings for StyleGAN3 on top of a preset's: no path length regularisation nor style
    mixing; for R, D's inputs blurred (sigma 10 pixels) fading out over the first batch * 200 / 32 kimg."""
    blur = {"blur_sigma": 10.0, "blur_kimg": cfg.batch * 200 / 32} if variant == "stylegan3-r" else \
        {"blur_sigma": 0.0, "blur_kimg": 0.0}
    return dataclasses.replace(cfg, pl_weight=0.0, style_mixing=0.0, **blur)


def to_json(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def model_from_json(d: dict) -> ModelConfig | Stylegan3Config:
    """A checkpoint's model config: StyleGAN3's by its variant, else StyleGAN2's (or 1's)."""
    kind = Stylegan3Config if d.get("variant") in VARIANTS3 else ModelConfig
    unknown = set(d) - {f.name for f in dataclasses.fields(kind)}
    if unknown:
        raise GenError(f"checkpoint model config has unknown fields {sorted(unknown)}; is it from a newer gen?")
    return kind(**d)


def train_from_json(d: dict) -> TrainConfig:
    d = dict(d)
    if isinstance(d.get("betas"), list):  # (JSON has no tuples; anything else is refused by TrainConfig)
        d["betas"] = tuple(d["betas"])
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
