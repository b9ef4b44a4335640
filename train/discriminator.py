"""The StyleGAN2 residual discriminator with a minibatch standard-deviation layer."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig
from .layers import EqualConv2d, EqualLinear


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs (the second after low-pass 2x downsampling) plus a 1x1 downsampled skip."""

    def __init__(self, in_ch: int, out_ch: int, clamp: float | None = None) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, clamp=clamp)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, down=True, clamp=clamp)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, activate=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1/sqrt(2) keeps the variance of the sum of two unit-variance paths.
        return (self.skip(x) + self.conv1(self.conv0(x))) * (1.0 / math.sqrt(2.0))


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append one feature map: the std over a group of samples, averaged, so D can see diversity."""
    n, c, h, w = x.shape
    g = min(group, n)
    while n % g:  # groups must tile the batch
        g -= 1
    y = x.float().reshape(g, n // g, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # [n/g, c, h, w]
    y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # [n, 1, h, w]
    return torch.cat([x, y.to(x.dtype)], dim=1)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        clamp = cfg.conv_clamp  # where NVlabs clamps: not the skips nor the dense layers
        self.from_rgb = EqualConv2d(3, cfg.channels(cfg.resolution), 1, clamp=clamp)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.channels(2**log2), cfg.channels(2 ** (log2 - 1)), clamp)
            for log2 in range(cfg.log2_res, 2, -1)
        )
        c4 = cfg.channels(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3, clamp=clamp)
        self.fc = EqualLinear(c4 * 16, c4, activate=True)
        self.out = EqualLinear(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [N, 3, R, R] -> realness logits [N]."""
        r = self.cfg.resolution
        if img.ndim != 4 or tuple(img.shape[1:]) != (3, r, r):
            raise ValueError(f"D expects [N, 3, {r}, {r}], got {list(img.shape)}")
        x = self.from_rgb(img)
        for block in self.blocks:
            x = block(x)
        x = self.conv(minibatch_stddev(x, self.cfg.mbstd_group))
        return self.out(self.fc(x.flatten(1))).squeeze(1)
