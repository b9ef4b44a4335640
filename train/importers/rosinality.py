"""rosinality/stylegan2-pytorch checkpoints -> our Generator's and Discriminator's state dicts.

Their StyleGAN2 computes what NVlabs' does, layer for layer (same equalised learning rates, modulation,
demodulation, up-sampling conv as a stride-2 transposed conv then the [1, 3, 3, 1] filter, ToRGB skips, noise,
lrelu with gain sqrt 2, a 'resnet' discriminator with a minibatch-stddev group of 4), so a checkpoint becomes a
run of ours by renaming and reshaping its tensors. What the file does not record is taken from their code:
the mapping's learning-rate multiplier (0.01, `lr_mlp`, which train.py never changes) and, when the checkpoint
has no `latent_avg` (their train.py saves none; convert_weight.py does), w_avg is estimated as their
generate.py does for truncation: the mean w of 4096 random z (ours from a fixed seed, so every import agrees).

Their names -> ours: style.{i+1} -> mapping.layers.{i} (style.0 is the pixel norm); input.input ->
synthesis.const; conv1, convs.0, convs.1, ... -> synthesis.layers.0, 1, 2, ... (conv.weight [1, out, in, 3, 3],
conv.modulation -> affine, noise.weight -> noise.strength, activate.bias -> bias); noises.noise_{i} ->
the layers' constant noise; to_rgb1, to_rgbs.{k} -> synthesis.torgbs.0, k + 1. D: convs.0 -> from_rgb,
convs.{i+1}.conv1, conv2, skip -> blocks.{i}.conv0, conv1, skip; final_conv -> conv; final_linear.0, 1 -> fc, out.
Their blur kernels are buffers: checked to be the filter we run, then dropped.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from gen.runtime.errors import GenError

from .. import checkpoint as ckpt
from ..config import ModelConfig
from ..stylegan import Generator
from .base import Imported, Taker, check_converted
from .pickles import ModelFile

LR_MLP = 0.01  # their Generator's default; train.py has no option for it
W_AVG_SAMPLES = 4096  # generate.py's --truncation_mean
KIND = "rosinality StyleGAN2 checkpoint"


def _channel_rule(channels: dict[int, int], what: str) -> tuple[int, int]:
    """(channel_base, channel_max) such that min(channel_base // res, channel_max) gives their channel table."""
    cmax = max(channels.values())
    below = [r * c for r, c in channels.items() if c < cmax]
    base = min(below) if below else cmax * max(channels)
    if any(min(base // r, cmax) != c for r, c in channels.items()):
        table = ", ".join(f"{r}: {c}" for r, c in sorted(channels.items()))
        raise GenError(f"{what} has the channel table {{{table}}}, which gen's rule min(base / res, max) cannot "
                       "express; gen cannot represent it, so nothing was imported")
    return base, cmax


def generator_config(g: dict[str, torch.Tensor], what: str) -> ModelConfig:
    """Our ModelConfig, read off the generator's tensor shapes (their files record the layout only there)."""
    def shape(name: str, rank: int) -> tuple[int, ...]:
        if name not in g:
            raise GenError(f"{what} has no tensor '{name}'; it is not a {KIND} gen can read (or the file is damaged)")
        if g[name].ndim != rank:
            raise GenError(f"{what}'s '{name}' has shape {list(g[name].shape)}, not {rank}-d; the file is damaged")
        return tuple(g[name].shape)

    mlp = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    rgbs = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k)))
    if not mlp or mlp != list(range(1, len(mlp) + 1)) or rgbs != list(range(len(rgbs))):
        raise GenError(f"{what} is not a StyleGAN2 generator of rosinality's layout (style.1..n and to_rgbs.k); "
                       f"gen cannot represent it, so nothing was imported")
    w_dim = shape("style.1.weight", 2)[1]
    log2_res = len(rgbs) + 2
    channels = {4: shape("input.input", 4)[1]}
    for k in range(len(rgbs)):
        channels[2 ** (k + 3)] = shape(f"convs.{2 * k}.conv.weight", 5)[1]
    base, cmax = _channel_rule(channels, what)
    try:
        return ModelConfig(resolution=2**log2_res, variant="stylegan2", z_dim=w_dim, w_dim=w_dim,
                           mapping_layers=len(mlp), mapping_lr_mul=LR_MLP, channel_base=base, channel_max=cmax)
    except GenError as e:
        raise GenError(f"{what}: {e}; gen cannot represent it, so nothing was imported") from None


def generator_state(g: dict[str, torch.Tensor], cfg: ModelConfig, what: str) -> dict[str, torch.Tensor]:
    """Their generator's state dict -> ours (w_avg left at zero: the caller sets it)."""
    take = Taker(g, what, KIND)
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.mapping_layers):
        out[f"mapping.layers.{i}.weight"] = take(f"style.{i + 1}.weight")
        out[f"mapping.layers.{i}.bias"] = take(f"style.{i + 1}.bias")
    out["mapping.w_avg"] = torch.zeros(cfg.w_dim)
    out["synthesis.const"] = take("input.input", (cfg.channels(4), 4, 4))
    convs = ["conv1"] + [f"convs.{j}" for j in range(2 * (cfg.log2_res - 2))]
    for i, theirs in enumerate(convs):
        ours, res = f"synthesis.layers.{i}.", 2 ** (2 + (i + 1) // 2)
        c_out, c_in = cfg.channels(res), cfg.channels(res if i % 2 == 0 else res // 2)
        up = i % 2 == 1
        weight = take(f"{theirs}.conv.weight", (c_out, c_in, 3, 3))
        # their transposed conv holds the kernel it scatters with; ours correlates, as F.conv2d does
        out[ours + "weight"] = weight.flip([2, 3]) if up else weight
        out[ours + "affine.weight"] = take(f"{theirs}.conv.modulation.weight")
        out[ours + "affine.bias"] = take(f"{theirs}.conv.modulation.bias")
        out[ours + "bias"] = take(f"{theirs}.activate.bias")
        out[ours + "noise.strength"] = take(f"{theirs}.noise.weight", ())
        out[ours + "noise.noise_const"] = take(f"noises.noise_{i}", (1, 1, res, res))
    for k, theirs in enumerate(["to_rgb1"] + [f"to_rgbs.{j}" for j in range(cfg.log2_res - 2)]):
        c_in, ours = cfg.channels(4 * 2**k), f"synthesis.torgbs.{k}."
        out[ours + "weight"] = take(f"{theirs}.conv.weight", (3, c_in, 1, 1))
        out[ours + "bias"] = take(f"{theirs}.bias", (3,))
        out[ours + "affine.weight"] = take(f"{theirs}.conv.modulation.weight")
        out[ours + "affine.bias"] = take(f"{theirs}.conv.modulation.bias")
    # blur kernels: x4 where they up-sample (the convs' and the skips')
    take.filters("kernel", lambda name: 4.0 if ".conv.blur." in name or ".upsample." in name else 1.0)
    take.done()
    return out


def discriminator_state(d: dict[str, torch.Tensor], cfg: ModelConfig, what: str) -> dict[str, torch.Tensor]:
    """Their discriminator's state dict -> ours."""
    take = Taker(d, what, KIND)
    out = {"from_rgb.weight": take("convs.0.0.weight"), "from_rgb.bias": take("convs.0.1.bias")}
    for i in range(cfg.log2_res - 2):
        theirs, ours = f"convs.{i + 1}.", f"blocks.{i}."
        for a, b in (("conv0.weight", "conv1.0.weight"), ("conv0.bias", "conv1.1.bias"), ("conv1.weight",
                     "conv2.1.weight"), ("conv1.bias", "conv2.2.bias"), ("skip.weight", "skip.1.weight")):
            out[ours + a] = take(theirs + b)
    out["conv.weight"], out["conv.bias"] = take("final_conv.0.weight"), take("final_conv.1.bias")
    out["fc.weight"], out["fc.bias"] = take("final_linear.0.weight"), take("final_linear.0.bias")
    out["out.weight"], out["out.bias"] = take("final_linear.1.weight"), take("final_linear.1.bias")
    take.filters("kernel")
    take.done()
    return out


def estimated_w_avg(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean w of W_AVG_SAMPLES z from seed 0, as their generate.py estimates it (from torch's generator)."""
    G = Generator(cfg)
    ckpt.load_module(G, state, "the converted generator")
    z = torch.from_numpy(np.random.RandomState(0).randn(W_AVG_SAMPLES, cfg.z_dim).astype(np.float32))
    with torch.no_grad():
        return G.mapping.w(z).mean(0)


def _latent_avg(value: object, w_dim: int) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() == w_dim:
        return value.detach().to(torch.float32, copy=True).reshape(w_dim)
    return None


def convert(model: ModelFile) -> tuple[Imported, dict[str, torch.Tensor]]:
    """A read rosinality ModelFile -> what was found and the checkpoint's tensors (G_ema, G, D prefixed)."""
    nets, path = model.networks, model.path
    cfg = generator_config(nets["g_ema"], f"'{path}' g_ema")
    found = Imported(path, model.format, cfg)
    tensors: dict[str, torch.Tensor] = {}
    for theirs, ours in (("g_ema", "G_ema"), ("g", "G")):
        if theirs in nets:
            if theirs == "g" and generator_config(nets["g"], f"'{path}' g") != cfg:
                raise GenError(f"'{path}': g and g_ema have different layouts; the checkpoint is damaged")
            tensors.update(ckpt.prefixed(generator_state(nets[theirs], cfg, f"'{path}' {theirs}"), ours))
    if "g" not in nets:
        found.lacks.append("g (the training generator; fine-tuning starts from g_ema)")
    if "d" in nets:
        tensors.update(ckpt.prefixed(discriminator_state(nets["d"], cfg, f"'{path}' d"), "D"))
    else:
        found.lacks.append("d (needed to fine-tune)")
    found.parameters = check_converted(cfg, tensors, path)  # (before the estimate below builds a G from them)
    w_avg = _latent_avg(model.extras.get("latent_avg"), cfg.w_dim)
    if w_avg is None:
        w_avg = estimated_w_avg(cfg, {k[len("G_ema."):]: v for k, v in tensors.items() if k.startswith("G_ema.")})
        found.lacks.append(f"latent_avg (w_avg estimated as the mean w of {W_AVG_SAMPLES} random z, as their "
                           "generate.py does for --truncation)")
    for name in ("G_ema", "G"):
        if f"{name}.mapping.w_avg" in tensors:
            tensors[f"{name}.mapping.w_avg"] = w_avg.clone()
    found.lacks.append("optimiser and augmentation state (not imported)")
    check_converted(cfg, tensors, path)
    return found, tensors
