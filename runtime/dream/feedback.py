"""Zoom/feedback animations: dream, zoom (and turn) the result a little, dream on that, again and again.
The frames are written by gen.runtime.video."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from gen.runtime.errors import GenError
from gen.runtime.images import blend

from .loop import DreamSettings, GradientFn, StepInfo, dream


@dataclass(frozen=True)
class FeedbackSettings:
    frames: int = 30
    zoom: float = 1.05  # scale per frame (> 1 flies into the picture)
    rotate: float = 0.0  # degrees per frame, counter-clockwise
    blend: float = 0.0  # share of the source image mixed into each next frame (0 = pure feedback)
    fps: float = 12.0

    def __post_init__(self) -> None:  # also run by dataclasses.replace: no settings exist unchecked
        if self.frames < 1:
            raise GenError("frames must be at least 1")
        if not 0.5 <= self.zoom <= 2.0:
            raise GenError(f"zoom must be between 0.5 and 2 per frame (got {self.zoom})")
        if not 0.0 <= self.blend <= 1.0:
            raise GenError(f"blend must be between 0 and 1 (got {self.blend})")
        if not self.fps > 0:
            raise GenError("fps must be positive")


def zoom_rotate(rgb: np.ndarray, zoom: float, degrees: float) -> np.ndarray:
    """Scale about the centre by `zoom` and turn by `degrees`; the borders are filled by mirroring.

    Only as much border is mirrored as the view reaches beyond the picture (plus the bicubic kernel's
    reach), and only the picture's own area is resampled: a zoom without a turn is one crop-resize.
    """
    if zoom == 1.0 and degrees == 0.0:
        return rgb.copy()
    h, w = rgb.shape[:2]
    angle = math.radians(degrees)
    # Output pixel -> source pixel: rotate by -degrees, shrink by zoom, about the centre.
    a, b = math.cos(angle) / zoom, -math.sin(angle) / zoom
    d, e = math.sin(angle) / zoom, math.cos(angle) / zoom
    # How far the view's corners land outside the picture (in source pixels), plus the kernel's 2 px.
    reach_x = (abs(a) * w + abs(b) * h) / 2 - w / 2
    reach_y = (abs(d) * w + abs(e) * h) / 2 - h / 2
    pad = max(0, math.ceil(max(reach_x, reach_y))) + 3
    im = Image.fromarray(np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
    cx, cy = w / 2 + pad, h / 2 + pad
    if degrees == 0.0:  # a crop of the padded picture, resized: ~20x faster than an affine transform
        box = (cx - w / (2 * zoom), cy - h / (2 * zoom), cx + w / (2 * zoom), cy + h / (2 * zoom))
        return np.asarray(im.resize((w, h), Image.Resampling.BICUBIC, box=box))
    # The transform maps output (x, y) in [0, w) x [0, h) to the padded picture: shift by pad first.
    c = cx - a * (cx - pad) - b * (cy - pad)
    f = cy - d * (cx - pad) - e * (cy - pad)
    out = im.transform((w, h), Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BICUBIC)
    return np.asarray(out)


def feedback_frames(
    image: np.ndarray,
    gradient: GradientFn,
    settings: DreamSettings,
    feedback: FeedbackSettings,
    mask: np.ndarray | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield `feedback.frames` dreamed uint8 frames; each starts from the previous one, zoomed and turned."""
    rng = np.random.default_rng(settings.seed)
    current = image
    for _ in range(feedback.frames):
        frame = dream(current, gradient, settings, mask, on_step, rng)
        yield frame
        current = zoom_rotate(frame, feedback.zoom, feedback.rotate)
        if feedback.blend:
            current = blend(current, image, feedback.blend)
