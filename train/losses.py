"""StyleGAN2 losses, each a small function named for what it is."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss for D: push real logits up and fake logits down."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def d_r1_penalty(real_logits: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient norm of D at the reals (R1); multiply by gamma/2 outside."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()


def g_path_lengths(fake_img: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """Per-sample length of J_w^T y for random image-space y: what path length regularisation keeps constant."""
    noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def blur_sigma_at(nimg: int, sigma: float, fade_kimg: float) -> float:
    """The sigma of D's input blur once `nimg` images were shown: `sigma` at the start, falling linearly to 0 at
    `fade_kimg` thousand images (StyleGAN3-R's schedule); 0 throughout without a fade."""
    if fade_kimg <= 0 or sigma <= 0:
        return 0.0
    return sigma * max(1.0 - nimg / (fade_kimg * 1000), 0.0)


def blur_images(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """img [N, C, H, W] blurred by a separable Gaussian bell of `sigma` pixels, cut at 3 sigma (none below 1/3 px).

    The bell is 2^-(x/sigma)^2, NVlabs' (a Gaussian of standard deviation sigma / sqrt(2 ln 2)), so a sigma
    means the blur theirs does. The borders are extended by repeating the edge pixels, where NVlabs pads with
    zeros: at StyleGAN3-R's first sigma of 10 the taps reach 30 pixels out, further than a small picture is wide,
    and zeros would fade most of it to grey; repeated edges keep a flat picture flat."""
    radius = math.floor(sigma * 3)
    if radius <= 0:
        return img
    x = torch.arange(-radius, radius + 1, device=img.device, dtype=torch.float32)
    taps = torch.exp2(-(x / sigma).square())
    taps = (taps / taps.sum()).to(img.dtype)
    c = img.shape[1]
    out = F.pad(img, [radius] * 4, mode="replicate")
    out = F.conv2d(out, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along x
    return F.conv2d(out, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along y
