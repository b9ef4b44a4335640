"""The StyleGAN generator: the PyTorch reference every exported graph is checked against.

StyleGAN2 (default): mapping network z -> w, learned constant, modulated + demodulated 3x3 convs,
per-pixel noise, ToRGB skip outputs, low-pass upsampling, equalised learning rate.
StyleGAN1 (variant "stylegan1"): the same skeleton with AdaIN (instance norm + style scale/bias).

The up-sampling convs run as NVlabs' do (a stride-2 transposed conv, then the low-pass filter), and
`conv_clamp` clips each layer's output as theirs does, so imported stylegan2-ada-pytorch weights draw the
same pictures (train/importers/nvlabs.py).

Modulation is written in the non-fused form (scale activations, convolve with the shared weight,
scale the output by the demodulation coefficients) because the fused grouped-conv form cannot be
exported with a dynamic batch; `modulated_conv2d_fused` keeps the textbook form for the test
that proves the two equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gen.runtime.errors import GenError
from gen.runtime.latents import check_noise_mode

from .config import ModelConfig
from .layers import EqualConv2d, EqualLinear, Upsample2x, UpsampleConv2d, lrelu, normalize_2nd_moment


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True, up: UpsampleConv2d | None = None) -> torch.Tensor:
    """x [N,I,H,W], weight [O,I,k,k] (already gained), styles [N,I] -> [N,O,H',W'] (non-fused)."""
    x = x * styles[:, :, None, None]
    x = up(x, weight) if up is not None else F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if demodulate:
        # sigma_o = sqrt(sum_i,k (s_i w_oik)^2): the std of the output for unit-variance input.
        dcoefs = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # [N, O]
        x = x * dcoefs[:, :, None, None]
    return x


def modulated_conv2d_fused(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                           demodulate: bool = True, up: bool = False) -> torch.Tensor:
    """The paper's form: per-sample weights, applied as one grouped conv; with `up`, the textbook order
    (zero-insert, low-pass filter, then convolve, uncropped in between). Reference for tests only."""
    n, i, h, _ = x.shape
    w = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    x = x.reshape(1, n * i, *x.shape[2:])
    pad = weight.shape[-1] // 2
    if up:  # zero-insert, filter into a frame wide enough that the conv reads no zero it should not
        zeros = torch.zeros(1, n * i, 2 * h, 2 * h, dtype=x.dtype)
        zeros[:, :, ::2, ::2] = x
        f = UpsampleConv2d().kernel[None, None].expand(n * i, 1, 4, 4)
        x = F.conv2d(zeros, f, padding=3, groups=n * i)[:, :, :-1, :-1]  # rows -1 .. 2H: [2H + 2] a side
        pad = 0
    out = F.conv2d(x, w.reshape(-1, i, *w.shape[3:]), padding=pad, groups=n)
    return out.reshape(n, -1, *out.shape[2:])


class MappingNetwork(nn.Module):
    """z -> w through an MLP with a low learning rate; tracks the average w for truncation."""

    def __init__(self, cfg: ModelConfig, num_ws: int, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.num_ws = num_ws
        self.w_avg_beta = w_avg_beta
        self.c_dim = cfg.c_dim
        if cfg.c_dim:  # class-conditional (NVlabs): the one-hot label embedded to w_dim features beside z
            self.embed = EqualLinear(cfg.c_dim, cfg.w_dim)
        dims = [cfg.z_dim + (cfg.w_dim if cfg.c_dim else 0)] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_mul=cfg.mapping_lr_mul, activate=True) for a, b in zip(dims[:-1], dims[1:])
        )
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    @torch.no_grad()
    def track_w_avg(self, w_mean: torch.Tensor) -> None:
        """Move the tracked average towards a batch mean of w (the trainer averages it over processes)."""
        self.w_avg.lerp_(w_mean.float(), 1.0 - self.w_avg_beta)

    def w(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """z [N, z_dim] (and the label c [N, c_dim] of a class-conditional model) -> one w [N, w_dim] (what the
        exported mapping graph computes)."""
        x = normalize_2nd_moment(z.float())
        if self.c_dim:
            if c is None:
                raise GenError(f"this model is class-conditional ({self.c_dim} classes) and no class was given")
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.float()))], dim=1)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None,
                c: torch.Tensor | None = None) -> torch.Tensor:
        ws = self.w(z, c)[:, None, :].repeat(1, self.num_ws, 1)
        if psi != 1.0:
            ws = truncate(ws, self.w_avg, psi, cutoff)
        return ws


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """Pull styles towards the average w by psi, for the first `cutoff` layers (all when None)."""
    # Written out (not torch.lerp, which switches formula at 0.5) so NumPy repeats it bit for bit.
    w_avg = w_avg.to(ws.dtype)
    truncated = w_avg + psi * (ws - w_avg)
    if cutoff is None or cutoff >= ws.shape[1]:
        return truncated
    return torch.cat([truncated[:, :cutoff], ws[:, cutoff:]], dim=1)


class NoiseInput(nn.Module):
    """Per-pixel noise with a learned strength; `const` mode uses a fixed stored noise image."""

    def __init__(self, res: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(1, 1, res, res))

    def forward(self, x: torch.Tensor, mode: str, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            if mode == "none":
                return x
            if mode == "const":
                noise = self.noise_const
            else:
                noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + noise.to(x.dtype) * self.strength


def clamp(x: torch.Tensor, limit: float | None) -> torch.Tensor:
    """NVlabs' conv_clamp: outputs clipped to +-limit (their official configs use 256); None: no clip."""
    return x if limit is None else x.clamp(-limit, limit)


class ModulatedLayer(nn.Module):
    """StyleGAN2 layer: modulated 3x3 conv (2x up-sampling, or not) -> noise -> bias -> leaky ReLU -> clamp."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, res: int, up: bool = False,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_ch * 9)
        self.up = UpsampleConv2d() if up else None
        self.noise = NoiseInput(res)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.conv_clamp = conv_clamp

    def forward(self, x, w, noise_mode="random", noise=None):
        x = modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w), up=self.up)
        x = self.noise(x, noise_mode, noise)
        return clamp(lrelu(x + self.bias[None, :, None, None].to(x.dtype)), self.conv_clamp)


class AdaINLayer(nn.Module):
    """StyleGAN1 layer: [upsample] 3x3 conv -> noise -> leaky ReLU -> instance norm -> style scale/bias."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, res: int, up: bool = False,
                 conv_clamp: float | None = None) -> None:  # (NVlabs has no StyleGAN1: nothing to clamp for)
        super().__init__()
        self.up = Upsample2x() if up else None
        self.conv = EqualConv2d(in_ch, out_ch, 3, activate=False)
        self.noise = NoiseInput(res)
        self.affine = EqualLinear(w_dim, 2 * out_ch)
        with torch.no_grad():
            self.affine.bias[:out_ch] = 1.0  # scale starts at 1, bias at 0

    def forward(self, x, w, noise_mode="random", noise=None):
        if self.up is not None:
            x = self.up(x)
        x = lrelu(self.noise(self.conv(x), noise_mode, noise))
        x = x - x.mean(dim=(2, 3), keepdim=True)
        x = x * (x.square().mean(dim=(2, 3), keepdim=True) + 1e-8).rsqrt()
        scale, bias = self.affine(w).chunk(2, dim=1)
        return x * scale[:, :, None, None] + bias[:, :, None, None]


class ToRGB(nn.Module):
    """1x1 conv to RGB: modulated without demodulation (StyleGAN2), or plain (StyleGAN1)."""

    def __init__(self, in_ch: int, w_dim: int, styled: bool, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.styled = styled
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0) if styled else None
        self.weight = nn.Parameter(torch.randn(3, in_ch, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_ch)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x, w=None):
        weight = self.weight * self.weight_gain
        if self.styled:
            x = modulated_conv2d(x, weight, self.affine(w), demodulate=False)
        else:
            x = F.conv2d(x, weight)
        return clamp(x + self.bias[None, :, None, None].to(x.dtype), self.conv_clamp)


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, 3, R, R], roughly in [-1, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        styled_rgb = cfg.variant == "stylegan2"
        layer_cls = ModulatedLayer if styled_rgb else AdaINLayer
        c4, clip = cfg.channels(4), cfg.conv_clamp
        self.const = nn.Parameter(torch.randn(c4, 4, 4))
        self.layers = nn.ModuleList([layer_cls(c4, c4, cfg.w_dim, 4, conv_clamp=clip)])
        self.torgbs = nn.ModuleList([ToRGB(c4, cfg.w_dim, styled_rgb, clip)])
        for log2 in range(3, cfg.log2_res + 1):
            res, c_in, c_out = 2**log2, cfg.channels(2 ** (log2 - 1)), cfg.channels(2**log2)
            self.layers.append(layer_cls(c_in, c_out, cfg.w_dim, res, up=True, conv_clamp=clip))
            self.layers.append(layer_cls(c_out, c_out, cfg.w_dim, res, conv_clamp=clip))
            self.torgbs.append(ToRGB(c_out, cfg.w_dim, styled_rgb, clip))
        self.up = Upsample2x()
        self.styled_rgb = styled_rgb
        self.num_ws = len(self.layers) + (1 if styled_rgb else 0)

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        """Shapes of the explicit noise inputs, one per layer (batch 1)."""
        return [tuple(layer.noise.noise_const.shape) for layer in self.layers]

    def forward(self, ws: torch.Tensor, noise_mode: str = "random",
                noises: list[torch.Tensor] | None = None) -> torch.Tensor:
        check_noise_mode(noise_mode)
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.cfg.w_dim:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.cfg.w_dim}], got {list(ws.shape)}")
        noises = noises if noises is not None else [None] * len(self.layers)
        x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        img = None
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], noise_mode, noises[i])
            if i % 2 == 0:  # the last layer of a block: 0 (4x4), then 2, 4, ...
                rgb = self.torgbs[i // 2](x, ws[:, i + 1] if self.styled_rgb else None)
                img = rgb if img is None else self.up(img) + rgb
        return img


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg, self.num_ws)

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None,
                noise_mode: str = "random", c: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(self.mapping(z, psi, cutoff, c), noise_mode)
