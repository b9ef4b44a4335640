"""Differentiable augmentation with an adaptive probability (ADA, Karras et al. 2020).

Every image in a batch is augmented independently; each enabled transform is applied with
probability p. Because D only ever sees augmented images (reals and fakes alike), G is trained
through the same augmentation, so everything here must be differentiable w.r.t. the pixels.
As long as p < 1 the augmentations do not "leak": G cannot lower its loss by producing
augmented-looking images, because the unaugmented distribution is still the only fixed point.

p is tuned by an overfitting heuristic: r_t = E[sign(D(real))] rises towards 1 as D memorises
the training set; p goes up while r_t > target and down while below.

Geometric transforms are composed into one 3x3 matrix per image and applied in a single
bilinear resample; colour transforms into one 4x4 matrix per image acting on RGB. Random
numbers come only from torch's global RNG on the images' device, so restoring the RNG state
reproduces a batch exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Strengths from the paper (Appendix B); images are in [-1, 1] and translations are fractions of the size.
XINT_MAX = 0.125        # integer translation: uniform in +-12.5% of the size, rounded to whole pixels
SCALE_STD = 0.2         # isotropic scale: lognormal, std in octaves (log2 units)
ROTATE_MAX = 1.0        # arbitrary rotation: uniform in +-ROTATE_MAX * pi
ANISO_STD = 0.2         # anisotropic scale: lognormal, std in octaves
XFRAC_STD = 0.125       # fractional translation: normal, std as a fraction of the size
BRIGHTNESS_STD = 0.2    # added to all channels
CONTRAST_STD = 0.5      # lognormal scale about mid-grey (0), std in octaves
HUE_MAX = 1.0           # rotation about the luma axis: uniform in +-HUE_MAX * pi
SATURATION_STD = 1.0    # lognormal scale of the chroma (off-luma) part, std in octaves
CUTOUT_SIZE = 0.5       # side of the zeroed square, as a fraction of the size

# p stays strictly below 1: at p = 1 a transform is no longer "sometimes" applied (e.g. a uniformly
# random 90-degree rotation), the un-augmented images stop being distinguishable and G may leak them.
P_MAX = 1.0 - 1e-6

_LUMA = (1.0 / math.sqrt(3.0),) * 3  # the grey axis; a plain mean, as in the paper


class AdaptiveAugment(torch.nn.Module):
    """ADA pipeline ("bgc" + optional cutout) with p adjusted from sign(D(real)) statistics.

    Buffers (saved in state_dict, so a resumed run continues exactly): p, and the sum of
    sign(real logits) and their count accumulated since the last adjust().
    """

    def __init__(self, target: float = 0.6, speed_kimg: float = 100.0, p: float = 0.0, *,
                 xflip: bool = True, rotate90: bool = True, xint: bool = True, scale: bool = True,
                 rotate: bool = True, aniso: bool = True, xfrac: bool = True,
                 brightness: bool = True, contrast: bool = True, lumaflip: bool = False,
                 hue: bool = True, saturation: bool = True, cutout: bool = False) -> None:
        super().__init__()
        if speed_kimg <= 0:
            raise ValueError(f"speed_kimg must be positive, got {speed_kimg}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.target = float(target)
        self.speed_kimg = float(speed_kimg)
        self.xflip, self.rotate90, self.xint, self.scale = xflip, rotate90, xint, scale
        self.rotate, self.aniso, self.xfrac = rotate, aniso, xfrac
        self.brightness, self.contrast, self.lumaflip = brightness, contrast, lumaflip
        self.hue, self.saturation, self.cutout = hue, saturation, cutout
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32))
        # float64 so counts stay exact however long adjust() is postponed.
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sign_count", torch.zeros((), dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"p={float(self.p):.4f}, target={self.target}, speed_kimg={self.speed_kimg}"

    # ---- the adaptive probability ----

    @torch.no_grad()
    def record(self, real_logits: Tensor) -> None:
        """Accumulate sign(D(real)) for the next adjust(); no gradient, no host sync."""
        signs = real_logits.detach().to(self.sign_sum.device, torch.float64).sign()
        self.sign_sum += signs.sum()
        self.sign_count += signs.numel()

    @torch.no_grad()
    def adjust(self, nimg: int, reduce: Callable[[Tensor], Tensor | None] | None = None) -> float:
        """Move p by sign(r_t - target) * nimg / (speed_kimg * 1000); return r_t (nan: nothing recorded).

        nimg counts real images shown since the last adjust over all processes; `reduce` sums a
        tensor over processes (in place or returned) so every process computes the same p.
        """
        stats = torch.stack([self.sign_sum, self.sign_count])
        if reduce is not None:
            reduced = reduce(stats)
            stats = stats if reduced is None else reduced
        total, count = stats.tolist()
        self.sign_sum.zero_()
        self.sign_count.zero_()
        if count == 0:
            return math.nan
        r_t = total / count
        sign = (r_t > self.target) - (r_t < self.target)
        step = sign * nimg / (self.speed_kimg * 1000.0)
        self.p.fill_(min(max(float(self.p) + step, 0.0), P_MAX))
        return r_t

    # ---- the augmentation ----

    def forward(self, images: Tensor) -> Tensor:
        """Augment [N, C, H, W] images; differentiable; returns `images` itself when p == 0."""
        p = float(self.p)
        if p <= 0.0:
            return images
        if images.ndim != 4:
            raise ValueError(f"expected images of shape [N, C, H, W], got {tuple(images.shape)}")
        # Matrices and resampling in float32 even under autocast: fp16 grids misplace pixels.
        with torch.autocast(device_type=images.device.type, enabled=False):
            x = images.float()
            x = self._geometric(x, p)
            x = self._colour(x, p)
            if self.cutout:
                x = self._cutout(x, p)
        return x.to(images.dtype)

    def _geometric(self, x: Tensor, p: float) -> Tensor:
        n, _, h, w = x.shape
        # Build the inverse (output -> input) map directly: each step right-multiplies the inverse
        # of the next forward transform. All distributions are symmetric, so each inverse is drawn
        # like the transform itself. Units are pixels with the origin at the image centre.
        g = _eye(n, 3, x.device)
        if self.xflip:
            g = g @ _scale2d(1 - 2 * _choose(n, p, torch.randint(0, 2, (n,), device=x.device), 0), 1)
        if self.rotate90:
            g = g @ _rotate90(_choose(n, p, torch.randint(0, 4, (n,), device=x.device), 0))
        if self.xint:
            t = (torch.rand(n, 2, device=x.device) * 2 - 1) * XINT_MAX
            t = _choose(n, p, t, 0) * torch.tensor([w, h], device=x.device)
            g = g @ _translate2d(t[:, 0].round(), t[:, 1].round())
        if self.scale:
            s = _choose(n, p, torch.exp2(torch.randn(n, device=x.device) * SCALE_STD), 1)
            g = g @ _scale2d(s, s)
        # Two rotations, each with probability p_rot, so an image is rotated with probability ~p.
        p_rot = 1 - math.sqrt(max(1 - p, 0.0))
        if self.rotate:
            g = g @ _rotate2d(_choose(n, p_rot, _uniform(n, ROTATE_MAX * math.pi, x.device), 0))
        if self.aniso:
            s = _choose(n, p, torch.exp2(torch.randn(n, device=x.device) * ANISO_STD), 1)
            g = g @ _scale2d(s, 1 / s)
        if self.rotate:
            g = g @ _rotate2d(_choose(n, p_rot, _uniform(n, ROTATE_MAX * math.pi, x.device), 0))
        if self.xfrac:
            t = _choose(n, p, torch.randn(n, 2, device=x.device) * XFRAC_STD, 0)
            t = t * torch.tensor([w, h], device=x.device)
            g = g @ _translate2d(t[:, 0], t[:, 1])

        # Resample only the images that moved: at small p most do not, and the warp is the costly part.
        moved = (g != _eye(n, 3, x.device)).flatten(1).any(1).nonzero().squeeze(1)
        if moved.numel() == 0:
            return x
        return x.index_copy(0, moved, _warp(x[moved], g[moved]))

    def _colour(self, x: Tensor, p: float) -> Tensor:
        n, c, _, _ = x.shape
        enabled = (self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation)
        if not any(enabled):
            return x
        if c != 3:
            raise ValueError(f"colour augmentation needs RGB images, got {c} channels; disable it for others")
        dev = x.device
        v = torch.tensor([*_LUMA, 0.0], device=dev)  # luma axis in homogeneous RGB
        vv = torch.outer(v, v)
        m = _eye(n, 4, dev)
        if self.brightness:
            b = _choose(n, p, torch.randn(n, device=dev) * BRIGHTNESS_STD, 0)
            m = _translate3d(b, b, b) @ m
        if self.contrast:
            s = _choose(n, p, torch.exp2(torch.randn(n, device=dev) * CONTRAST_STD), 1)
            m = _scale3d(s, s, s) @ m
        if self.lumaflip:  # Householder reflection of the luma component: light <-> dark
            i = _choose(n, p, torch.randint(0, 2, (n,), device=dev), 0)
            m = (torch.eye(4, device=dev) - 2 * vv * i.view(n, 1, 1)) @ m
        if self.hue:
            m = _rotate_luma(_choose(n, p, _uniform(n, HUE_MAX * math.pi, dev), 0)) @ m
        if self.saturation:  # keep the luma part, scale what is orthogonal to it
            s = _choose(n, p, torch.exp2(torch.randn(n, device=dev) * SATURATION_STD), 1)
            m = (vv + (torch.eye(4, device=dev) - vv) * s.view(n, 1, 1)) @ m

        if torch.equal(m, _eye(n, 4, dev)):
            return x
        # An identity matrix reproduces a pixel exactly (1*a + 0*b + 0*c + 0), so no masking is needed.
        rgb = m[:, :3, :3] @ x.flatten(2) + m[:, :3, 3:]
        return rgb.view_as(x)

    def _cutout(self, x: Tensor, p: float) -> Tensor:
        n, _, h, w = x.shape
        dev = x.device
        centre = _choose(n, p, torch.rand(n, 2, device=dev), -10.0)  # -10: far off-image, nothing cut
        ys = (torch.arange(h, device=dev) + 0.5) / h
        xs = (torch.arange(w, device=dev) + 0.5) / w
        outside_x = (xs.view(1, 1, w) - centre[:, 0].view(n, 1, 1)).abs() >= CUTOUT_SIZE / 2
        outside_y = (ys.view(1, h, 1) - centre[:, 1].view(n, 1, 1)).abs() >= CUTOUT_SIZE / 2
        keep = (outside_x | outside_y).to(x.dtype)
        return x * keep.unsqueeze(1)  # zero is mid-grey in [-1, 1]


def _warp(x: Tensor, g: Tensor) -> Tensor:
    """Resample x through the output->input pixel map g ([N, 3, 3], origin at the centre).

    Plain bilinear, not NVlabs' upsampled-filter warp: the scale changes are small (std 0.2
    octaves), so the mild aliasing is an acceptable price for a simple, fast resample here.
    Reflection padding (not zeros) so no artificial border appears that D could key on and G
    would then have to reproduce; grid_sample reflects repeatedly, so any shift is covered.
    """
    n, _, h, w = x.shape
    # Pixels -> affine_grid's normalised [-1, 1] coordinates (align_corners=False: the edges).
    to_norm = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0], dtype=g.dtype, device=x.device))
    to_pix = torch.diag(torch.tensor([w / 2.0, h / 2.0, 1.0], dtype=g.dtype, device=x.device))
    theta = (to_norm @ g @ to_pix)[:, :2, :]
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _choose(n: int, p: float, value: Tensor, identity: float) -> Tensor:
    """Per image: `value` with probability p, else the transform's identity parameter."""
    apply = torch.rand(n, device=value.device) < p
    apply = apply.view(n, *([1] * (value.ndim - 1)))
    return torch.where(apply, value.float(), torch.full_like(value, identity, dtype=torch.float32))


def _uniform(n: int, limit: float, device: torch.device) -> Tensor:
    return (torch.rand(n, device=device) * 2 - 1) * limit


def _eye(n: int, size: int, device: torch.device) -> Tensor:
    return torch.eye(size, device=device).repeat(n, 1, 1)


def _translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    m = _eye(len(tx), 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale2d(sx: Tensor, sy: Tensor | float) -> Tensor:
    m = _eye(len(sx), 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(angle: Tensor) -> Tensor:
    cos, sin = angle.cos(), angle.sin()
    m = _eye(len(angle), 3, angle.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _rotate90(k: Tensor) -> Tensor:
    # Rounded so that quarter turns are exact (cos(pi/2) is not 0 in floating point).
    angle = k * (math.pi / 2)
    cos, sin = angle.cos().round(), angle.sin().round()
    m = _eye(len(k), 3, k.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _translate3d(tx: Tensor, ty: Tensor, tz: Tensor) -> Tensor:
    m = _eye(len(tx), 4, tx.device)
    m[:, 0, 3], m[:, 1, 3], m[:, 2, 3] = tx, ty, tz
    return m


def _scale3d(sx: Tensor, sy: Tensor, sz: Tensor) -> Tensor:
    m = _eye(len(sx), 4, sx.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, sz
    return m


def _rotate_luma(angle: Tensor) -> Tensor:
    """4x4 rotations of RGB by `angle` [N] about the luma axis (Rodrigues' formula): a hue shift."""
    a0, a1, a2 = _LUMA
    cross = torch.tensor([[0.0, -a2, a1], [a2, 0.0, -a0], [-a1, a0, 0.0]], device=angle.device)
    axis = torch.tensor(_LUMA, device=angle.device)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    m = _eye(len(angle), 4, angle.device)
    m[:, :3, :3] = cos * torch.eye(3, device=angle.device) + sin * cross + (1 - cos) * torch.outer(axis, axis)
    return m
