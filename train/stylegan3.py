"""StyleGAN3 (alias-free; Karras et al. 2021), configs T (translation-equivariant) and R (rotation-equivariant).

The PyTorch reference the runtime's SG3 graphs and imported NVlabs models are checked against. The synthesis
network starts from Fourier features whose frequencies and phases move with an affine transform of the image
plane (rotation and translation from the first w, then a user transform: the camera), and each layer is a
modulated conv followed by a *filtered* leaky ReLU: up-sample with a low-pass filter, bias, lrelu (gain sqrt 2),
clamp, low-pass and down-sample again, so no frequency above a layer's cutoff survives. The last layers are
critically sampled; R uses 1x1 convs and radially symmetric down-sampling filters.

Everything is plain tensor ops (zero insertion by reshape and pad, FIR filters as depthwise convs), so the same
code exports to ONNX. Modulation is per sample (non-fused): the picture of a seed does not depend on the batch.
NVlabs normalises the styles over the whole batch before demodulating, which demodulation cancels up to its
1e-8 epsilon; here each sample is normalised alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import Stylegan3Config
from .layers import EqualLinear
from .stylegan import MappingNetwork


@dataclass(frozen=True)
class LayerPlan:
    """What one synthesis layer computes: sizes (with margins), sampling rates, cutoffs and channels."""

    in_size: int
    out_size: int
    in_rate: int
    out_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    in_channels: int
    out_channels: int
    critical: bool
    torgb: bool


def plan(cfg: Stylegan3Config) -> tuple[LayerPlan, ...]:
    """The Fourier input's and each layer's plan (index 0 is the input), from the paper's schedule: cutoffs rise
    geometrically from first_cutoff to the Nyquist frequency of the picture over the non-critical layers, the
    stopbands likewise; each sampling rate is the power of two that holds its stopband (at most the resolution)."""
    n = cfg.num_layers
    last_cutoff = cfg.resolution / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    t = np.minimum(np.arange(n + 1) / (n - cfg.num_critical), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** t
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** t
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, cfg.resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + cfg.margin_size * 2
    sizes[-2:] = cfg.resolution
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max))
    channels[-1] = 3
    layers = []
    for i in range(n + 1):
        p = max(i - 1, 0)
        layers.append(LayerPlan(int(sizes[p]), int(sizes[i]), int(rates[p]), int(rates[i]), float(cutoffs[p]),
                                float(cutoffs[i]), float(half_widths[p]), float(half_widths[i]), int(channels[p]),
                                int(channels[i]), i >= n - cfg.num_critical, i == n))
    return tuple(layers)


def lowpass_filter(taps: int, cutoff: float, width: float, rate: float, radial: bool = False) -> torch.Tensor:
    """A windowed low-pass FIR filter (Kaiser window): 1-D, separable, or 2-D radially symmetric (a windowed
    jinc). One tap is no filter: [1]."""
    import scipy.signal
    import scipy.special

    if taps == 1:
        return torch.ones(1)
    if not radial:
        f = scipy.signal.firwin(numtaps=taps, cutoff=cutoff, width=width, fs=rate)
        return torch.as_tensor(f, dtype=torch.float32)
    x = (np.arange(taps) - (taps - 1) / 2) / rate
    r = np.hypot(*np.meshgrid(x, x))
    f = scipy.special.j1(2 * cutoff * np.pi * r) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(taps, width / (rate / 2)))
    window = np.kaiser(taps, beta)
    f = f * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int, int, int] = (0,) * 4,
              gain: float = 1.0) -> torch.Tensor:
    """Up-sample by zero insertion, pad (x0, x1, y0, y1; negative crops), convolve with the FIR filter `f`
    (1-D: separable, along x then y; 2-D as is) times `gain` over its dimensions, keep every `down`-th pixel."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(-1, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(-1, c, h * up, w * up)
    px0, px1, py0, py1 = pad
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = (f * gain ** (f.ndim / 2)).to(x.dtype).flip(list(range(f.ndim)))  # convolve, not correlate
    if f.ndim == 1 and f.numel() > 1:
        x = F.conv2d(x, f[None, None, None].expand(c, 1, 1, -1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), groups=c)
    elif f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, -1, -1), groups=c)
    elif gain != 1:  # a one-tap filter: the gain alone
        x = x * gain
    return x[:, :, ::down, ::down] if down > 1 else x


class FourierInput(nn.Module):
    """Fourier features over the image plane, turned and shifted by the rotation and translation the first w
    asks for, then by `transform` (a 3x3 inverse transform of the picture: the camera), mixed by a learned
    matrix."""

    def __init__(self, w_dim: int, channels: int, size: int, rate: float, bandwidth: float) -> None:
        super().__init__()
        self.size, self.rate, self.bandwidth = size, rate, bandwidth
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = EqualLinear(w_dim, 4)
        with torch.no_grad():  # starts as the identity transform
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        """w [N, w_dim] (and a camera transform [N, 3, 3] or [3, 3]; default the stored one) -> [N, C, S, S]."""
        t = self.affine(w)  # (cos, sin, tx, ty) up to scale
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        c, s, tx, ty = t.unbind(1)
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        rotate = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], 1).reshape(-1, 3, 3)
        shift = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], 1).reshape(-1, 3, 3)
        m = rotate @ shift @ (self.transform if transform is None else transform).to(w.dtype)
        phases = self.phases[None] + (self.freqs[None] @ m[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = self.freqs[None] @ m[:, :2, :2]  # [N, C, 2]
        # frequencies turned beyond the band fade out instead of aliasing
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.rate / 2 - self.bandwidth)).clamp(0, 1)
        axis = (torch.arange(self.size, dtype=w.dtype, device=w.device) + 0.5 - self.size / 2) / self.rate
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)  # [S, S, (x, y)]
        x = grid[None] @ freqs.transpose(1, 2)[:, None]  # [N, S, S, C]
        x = torch.sin((x + phases[:, None, None]) * (2 * math.pi)) * amplitudes[:, None, None]
        x = x @ (self.weight / math.sqrt(self.weight.shape[0])).t()
        return x.permute(0, 3, 1, 2)


class AliasFreeLayer(nn.Module):
    """Modulated conv (input gain from the tracked input magnitude) -> filtered leaky ReLU: up-sample to the
    activation's rate, bias, lrelu, clamp, low-pass and down-sample to the output's rate."""

    def __init__(self, cfg: Stylegan3Config, p: LayerPlan, magnitude_ema_beta: float = 0.999) -> None:
        super().__init__()
        self.torgb, self.conv_clamp, self.magnitude_ema_beta = p.torgb, cfg.conv_clamp, magnitude_ema_beta
        self.kernel = 1 if p.torgb else cfg.conv_kernel
        self.affine = EqualLinear(cfg.w_dim, p.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(p.out_channels, p.in_channels, self.kernel, self.kernel))
        self.bias = nn.Parameter(torch.zeros(p.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        tmp_rate = max(p.in_rate, p.out_rate) * (1 if p.torgb else cfg.lrelu_upsampling)
        self.up, self.down = tmp_rate // p.in_rate, tmp_rate // p.out_rate
        up_taps = cfg.filter_size * self.up if self.up > 1 and not p.torgb else 1
        down_taps = cfg.filter_size * self.down if self.down > 1 and not p.torgb else 1
        self.register_buffer("up_filter", lowpass_filter(up_taps, p.in_cutoff, p.in_half_width * 2, tmp_rate))
        self.register_buffer("down_filter", lowpass_filter(down_taps, p.out_cutoff, p.out_half_width * 2, tmp_rate,
                                                           radial=cfg.radial_filters and not p.critical))
        # pad so that the output is out_size after both filters, sample positions centred (symmetric reading)
        total = (p.out_size - 1) * self.down + 1 - (p.in_size + self.kernel - 1) * self.up + up_taps + down_taps - 2
        lo = (total + self.up) // 2
        self.pad = (lo, total - lo, lo, total - lo)

    def forward(self, x: torch.Tensor, w: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        if update_emas:
            with torch.no_grad():
                self.magnitude_ema.copy_(x.detach().float().square().mean().lerp(self.magnitude_ema,
                                                                                   self.magnitude_ema_beta))
        styles = self.affine(w)
        weight = self.weight
        if self.torgb:
            styles = styles / math.sqrt(weight.shape[1] * self.kernel**2)
        else:  # both normalised to unit RMS first: demodulation cancels their scale, and FP16 keeps its range
            weight = weight * weight.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
            styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        x = x * (styles * self.magnitude_ema.rsqrt())[:, :, None, None]
        x = F.conv2d(x, weight.to(x.dtype), padding=self.kernel - 1)
        if not self.torgb:
            dcoefs = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # [N, O]
            x = x * dcoefs[:, :, None, None]
        x = x + self.bias[None, :, None, None].to(x.dtype)
        x = upfirdn2d(x, self.up_filter, up=self.up, pad=self.pad, gain=self.up**2)
        if not self.torgb:
            x = F.leaky_relu(x, 0.2) * math.sqrt(2)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return upfirdn2d(x, self.down_filter, down=self.down)


class Synthesis3(nn.Module):
    """ws [N, num_ws, w_dim] -> picture [N, 3, R, R]: Fourier input, the layers, ToRGB, output scale."""

    def __init__(self, cfg: Stylegan3Config) -> None:
        super().__init__()
        self.cfg = cfg
        plans = plan(cfg)
        first = plans[0]
        self.input = FourierInput(cfg.w_dim, first.out_channels, first.out_size, first.out_rate, first.out_cutoff)
        self.layers = nn.ModuleList(AliasFreeLayer(cfg, p) for p in plans)
        self.num_ws = len(self.layers) + 1

    def forward(self, ws: torch.Tensor, transform: torch.Tensor | None = None, update_emas: bool = False
                ) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.cfg.w_dim:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.cfg.w_dim}], got {list(ws.shape)}")
        x = self.input(ws[:, 0], transform)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i + 1], update_emas)
        return x * self.cfg.output_scale


class Generator3(nn.Module):
    """z (and a class) -> w -> picture; the mapping network is StyleGAN2's (NVlabs tracks its w_avg with
    beta 0.998 for StyleGAN3)."""

    def __init__(self, cfg: Stylegan3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.synthesis = Synthesis3(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg, self.num_ws, w_avg_beta=0.998)

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None, c: torch.Tensor | None = None,
                transform: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(self.mapping(z, psi, cutoff, c), transform)
