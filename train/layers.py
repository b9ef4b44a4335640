"""Building blocks shared by G and D: equalised learning rate, low-pass resampling, activations.

Every op here exports to ONNX with a dynamic batch: filters are depthwise convolutions with
constant kernels, and nothing depends on the batch size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with the gain that keeps activations at unit variance."""
    return F.leaky_relu(x, 0.2) * SQRT2


class EqualLinear(nn.Module):
    """Linear layer whose weights are scaled at run time (equalised learning rate), with lr multiplier."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return lrelu(x) if self.activate else x


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate; with `down`, a low-pass 2x downsampling conv.

    A 3x3 downsampling conv low-passes at full resolution and then convolves with stride 2 (as
    NVlabs does), so the conv still sees full-resolution features; a 1x1 conv commutes with the
    decimation, so it runs after Downsample2x.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, activate: bool = True,
                 down: bool = False, clamp: float | None = None) -> None:
        super().__init__()
        self.clamp = clamp  # NVlabs' conv_clamp: the output clipped to +-clamp
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.activate = activate
        self.stride, self.padding, self.pre = 1, kernel // 2, None
        if down and kernel > 1:
            # (H + 4 - 3) = H + 1 after the filter, then (H + 1 - k) / 2 + 1 = H / 2 for k = 3.
            self.stride, self.padding, self.pre = 2, 0, LowPass(padding=(kernel + 1) // 2)
        elif down:
            self.pre = Downsample2x()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, stride=self.stride, padding=self.padding)
        x = lrelu(x) if self.activate else x
        return x if self.clamp is None else x.clamp(-self.clamp, self.clamp)


def lowpass_kernel(taps=(1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """Separable binomial low-pass filter, normalised to sum 1, as a [K, K] tensor."""
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum()


class Upsample2x(nn.Module):
    """Zero-insertion 2x upsampling followed by a low-pass filter, as one depthwise transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        # Gain 4 keeps the mean: 3 of 4 output pixels start as inserted zeros.
        self.register_buffer("kernel", lowpass_kernel() * 4.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.kernel.to(x.dtype)[None, None].expand(c, 1, 4, 4)
        # (H-1)*2 - 2*1 + 4 = 2H: exactly twice the size.
        return F.conv_transpose2d(x, w, stride=2, padding=1, groups=c)


class UpsampleConv2d(nn.Module):
    """A 3x3 conv at twice the resolution, computed as NVlabs does: a stride-2 transposed conv of the
    low-resolution input, then the low-pass filter (gain 4). This is the exact composition (up-sample, filter,
    conv) with nothing cut between the two steps, so imported NVlabs weights draw their pictures to the pixel,
    borders included, and the conv runs on a quarter of the pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", lowpass_kernel() * 4.0, persistent=False)

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """x [N, I, H, W], weight [O, I, 3, 3] as F.conv2d takes it -> [N, O, 2H, 2W]."""
        if weight.shape[-2:] != (3, 3):
            raise ValueError(f"UpsampleConv2d takes 3x3 weights, got {tuple(weight.shape)}")
        # conv_transpose2d convolves (flips) where conv2d correlates: flip, so a weight means the same here as
        # in every other layer. [N, O, 2H + 1, 2W + 1]
        x = F.conv_transpose2d(x, weight.flip([2, 3]).transpose(0, 1), stride=2)
        c = x.shape[1]
        # (2H + 1) + 2 - 4 + 1 = 2H
        return F.conv2d(x, self.kernel.to(x.dtype)[None, None].expand(c, 1, 4, 4), padding=1, groups=c)


class LowPass(nn.Module):
    """The low-pass filter alone (stride 1), padded by `padding` on each side."""

    def __init__(self, padding: int) -> None:
        super().__init__()
        self.padding = padding
        self.register_buffer("kernel", lowpass_kernel(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel.to(x.dtype)[None, None].expand(c, 1, 4, 4), padding=self.padding, groups=c)


class Downsample2x(nn.Module):
    """Low-pass filter then keep every second pixel, as one depthwise strided conv."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", lowpass_kernel(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.kernel.to(x.dtype)[None, None].expand(c, 1, 4, 4)
        # (H + 2 - 4) / 2 + 1 = H/2.
        return F.conv2d(x, w, stride=2, padding=1, groups=c)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()
