"""The dreaming loop, written once for every engine (PyTorch reference, ONNX runtime, TensorRT).

DeepDream is gradient ascent on the image: each step adds the gradient of an objective (how strongly
a CNN layer fires) to the pixels. Around that single gradient call this module does the rest:

- an octave pyramid: dream the smallest copy first, carry the detail it gained up to the next size;
- a random roll (jitter) of the image before each gradient, undone after, so patterns do not stick
  to the pixel grid;
- tiles: large images are split into tiles whose gradients are computed one at a time, so memory
  stays bounded; the roll moves the seams every step, so they do not show;
- a normalised step (gradient divided by its mean absolute value), clipping to [0, 1], a mask.

An engine is a function `gradient(image) -> (grad, objective)`: image float32 [1, 3, H, W] in
[0, 1] RGB, grad of the same shape, objective a float; a `DreamEngine` carries it with its smallest
image side, a description and how to close it. Nothing here imports torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gen.runtime.errors import GenError, GenWarning
from gen.runtime.images import load_image

GradientFn = Callable[[np.ndarray], tuple[np.ndarray, float]]
NORMS = ("mean", "std", "none")


@dataclass(frozen=True)
class DreamSettings:
    octaves: int = 4  # pyramid levels, each `octave_scale` times smaller than the next
    octave_scale: float = 1.4
    iterations: int = 10  # gradient steps per octave
    step: float = 0.008  # how far one step moves a pixel on average (pixels are in [0, 1])
    norm: str = "mean"  # gradient normalisation: mean |g| (Caffe notebook), std (TF tutorial) or none
    jitter: int = 32  # largest random roll in pixels, each step
    tile: int = 512  # largest tile side; 0 = the whole image at once
    min_side: int = 32  # octaves smaller than this are skipped (the backbone's smallest input)
    seed: int = 0

    def __post_init__(self) -> None:  # also run by dataclasses.replace: no settings exist unchecked
        if self.octaves < 1 or self.iterations < 1:
            raise GenError("octaves and iterations must be at least 1")
        if self.octave_scale < 1.0:
            raise GenError(f"octave scale must be at least 1 (got {self.octave_scale})")
        if not self.step > 0:
            raise GenError(f"step must be positive (got {self.step})")
        if self.norm not in NORMS:
            raise GenError(f"unknown gradient normalisation '{self.norm}'; choose one of: {', '.join(NORMS)}")
        if self.jitter < 0:
            raise GenError("jitter must be 0 or more pixels")
        if self.tile and self.tile < 2 * self.min_side:
            raise GenError(f"tile must be 0 (no tiles) or at least {2 * self.min_side} pixels (got {self.tile})")


def _nothing_to_close() -> None:
    pass


@dataclass(frozen=True)
class DreamEngine:
    """A gradient function and what a dream needs to know about it; `with engine:` closes it (a bundle's runner)."""

    gradient: GradientFn
    min_side: int  # smallest image side the network takes
    description: str  # what dreams and where, for the line before the progress bar
    close: Callable[[], None] = _nothing_to_close

    def __enter__(self) -> DreamEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class StepInfo:
    """What the loop reports after every gradient step (for progress bars and logs)."""

    octave: int  # 1-based, smallest first
    octaves: int
    iteration: int  # 1-based within the octave
    objective: float
    size: tuple[int, int]  # (height, width) of this octave


def octave_sizes(height: int, width: int, settings: DreamSettings) -> list[tuple[int, int]]:
    """(height, width) of each octave, smallest first, ending with the full size."""
    if min(height, width) < settings.min_side:
        raise GenError(f"the image is {width}x{height} pixels; dreaming needs at least "
                       f"{settings.min_side}x{settings.min_side}")
    sizes = []
    for i in range(settings.octaves):
        h, w = round(height / settings.octave_scale**i), round(width / settings.octave_scale**i)
        if min(h, w) < settings.min_side:
            break
        sizes.append((h, w))
    return sizes[::-1]


def count_steps(height: int, width: int, settings: DreamSettings) -> int:
    return len(octave_sizes(height, width, settings)) * settings.iterations


def resize_planes(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of float planes [C, H, W] (antialiased when shrinking), with Pillow."""
    if x.shape[1:] == (height, width):
        return x.copy()
    planes = [np.asarray(Image.fromarray(p, mode="F").resize((width, height), Image.Resampling.BILINEAR))
              for p in x.astype(np.float32)]
    return np.stack(planes)


def tile_bounds(length: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, length) into the fewest near-equal parts no longer than `tile` (no thin leftovers)."""
    parts = max(1, -(-length // tile)) if tile else 1
    edges = np.linspace(0, length, parts + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def tiled_gradient(x: np.ndarray, gradient: GradientFn, tile: int = 0,
                   shift: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, float]:
    """Gradient of image `x` [3, H, W], tile by tile, on the image rolled by `shift` (dy, dx).

    The objective returned is the tiles' objectives averaged by area.
    """
    _, h, w = x.shape
    rolled = np.roll(x, shift, axis=(1, 2))
    grad = np.empty_like(rolled)
    objective = 0.0
    for y0, y1 in tile_bounds(h, tile):
        for x0, x1 in tile_bounds(w, tile):
            g, value = gradient(np.ascontiguousarray(rolled[None, :, y0:y1, x0:x1]))
            grad[:, y0:y1, x0:x1] = g[0]
            objective += float(value) * (y1 - y0) * (x1 - x0) / (h * w)
    return np.roll(grad, (-shift[0], -shift[1]), axis=(1, 2)), objective


def normalize_gradient(g: np.ndarray, norm: str) -> np.ndarray:
    if norm == "mean":
        return g / (np.abs(g).mean() + 1e-8)
    if norm == "std":
        return g / (g.std() + 1e-8)
    return g


def random_shift(rng: np.random.Generator, size: tuple[int, int], settings: DreamSettings) -> tuple[int, int]:
    """Jitter in [-jitter, jitter]; plus, where tiles split a side, a roll by up to a tile to move the seams."""
    shift = []
    for side in size:
        s = int(rng.integers(-settings.jitter, settings.jitter + 1)) if settings.jitter else 0
        if settings.tile and side > settings.tile:
            s += int(rng.integers(0, settings.tile))
        shift.append(s)
    return shift[0], shift[1]


def dream_planes(
    base: np.ndarray,
    gradient: GradientFn,
    settings: DreamSettings,
    mask: np.ndarray | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Dream on float planes [3, H, W] in [0, 1]; `mask` [H, W] in [0, 1] scales every step."""
    rng = rng if rng is not None else np.random.default_rng(settings.seed)
    sizes = octave_sizes(base.shape[1], base.shape[2], settings)
    detail = None
    x = base
    for o, (h, w) in enumerate(sizes, start=1):
        octave_base = resize_planes(base, h, w)
        octave_mask = None if mask is None else resize_planes(mask[None], h, w)
        x = octave_base if detail is None else octave_base + resize_planes(detail, h, w)
        for i in range(1, settings.iterations + 1):
            g, objective = tiled_gradient(x, gradient, settings.tile, random_shift(rng, (h, w), settings))
            g = normalize_gradient(g, settings.norm) * settings.step
            if octave_mask is not None:
                g *= octave_mask
            x = np.clip(x + g, 0.0, 1.0, dtype=np.float32)
            if on_step is not None:
                on_step(StepInfo(o, len(sizes), i, objective, (h, w)))
        detail = x - octave_base
    return x


def apply_mask(original: np.ndarray, dreamed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend uint8 images by `mask` [H, W] in [0, 1]; where the mask is 0 the original is kept exactly."""
    m = mask[..., None]
    blended = np.rint(original * (1.0 - m) + dreamed * m)
    return np.where(m > 0, blended, original).astype(np.uint8)


def dream(
    image: np.ndarray,
    gradient: GradientFn,
    settings: DreamSettings = DreamSettings(),
    mask: np.ndarray | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Dream on a uint8 RGB image [H, W, 3]; returns a new uint8 image of the same size.

    `mask` [H, W] in [0, 1]: 1 dreams fully, 0 keeps the pixel exactly as it was.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise GenError(f"dream needs a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    if mask is not None and mask.shape != image.shape[:2]:
        raise GenError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {image.shape[1]}x{image.shape[0]}")
    base = image.astype(np.float32).transpose(2, 0, 1) / 255.0
    planes = dream_planes(base, gradient, settings, mask, on_step, rng)
    out = np.clip(np.rint(planes.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    return out if mask is None else apply_mask(image, out, mask)


def load_mask(path: str | Path, height: int, width: int) -> np.ndarray:
    """A mask image -> float32 [height, width] in [0, 1] (white = dream, black = keep)."""
    rgb = load_image(path)
    mask = rgb.astype(np.float32).mean(axis=2) / 255.0
    if mask.shape != (height, width):
        warnings.warn(f"mask '{path}' is {rgb.shape[1]}x{rgb.shape[0]}, resized to the image's {width}x{height}",
                      GenWarning, stacklevel=2)
        mask = np.clip(resize_planes(mask[None], height, width)[0], 0.0, 1.0)
    if not mask.any():
        warnings.warn(f"mask '{path}' is black everywhere: nothing will change", GenWarning, stacklevel=2)
    return mask
