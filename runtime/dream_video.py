"""Zoom/feedback animations: dream, zoom (and turn) the result a little, dream on that, again and again.

Frames are written as GIF (Pillow) or MP4 (ffmpeg, from the `video` extra) through imageio, one at a
time to a temporary file that replaces the output only when every frame is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .dream import DreamSettings, GradientFn, StepInfo, dream
from .errors import GenError
from .files import atomic_path

VIDEO_SUFFIXES = (".gif", ".mp4")


@dataclass(frozen=True)
class FeedbackSettings:
    frames: int = 30
    zoom: float = 1.05  # scale per frame (> 1 flies into the picture)
    rotate: float = 0.0  # degrees per frame, counter-clockwise
    blend: float = 0.0  # share of the source image mixed into each next frame (0 = pure feedback)
    fps: float = 12.0

    def check(self) -> FeedbackSettings:
        if self.frames < 1:
            raise GenError("frames must be at least 1")
        if not 0.5 <= self.zoom <= 2.0:
            raise GenError(f"zoom must be between 0.5 and 2 per frame (got {self.zoom})")
        if not 0.0 <= self.blend <= 1.0:
            raise GenError(f"blend must be between 0 and 1 (got {self.blend})")
        if not self.fps > 0:
            raise GenError("fps must be positive")
        return self


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
    feedback.check()
    rng = np.random.default_rng(settings.seed)
    current = image
    for _ in range(feedback.frames):
        frame = dream(current, gradient, settings, mask, on_step, rng)
        yield frame
        current = zoom_rotate(frame, feedback.zoom, feedback.rotate)
        if feedback.blend:
            mixed = (1.0 - feedback.blend) * current + feedback.blend * image.astype(np.float32)
            current = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def check_video_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise GenError(f"'{path}': animations are written as .gif or .mp4")
    if path.suffix.lower() == ".mp4":
        from .errors import require_extra

        require_extra("imageio_ffmpeg", "video")
    return path


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write uint8 RGB frames to a .gif or .mp4 atomically; returns the number of frames written."""
    import imageio.v3 as iio

    path = check_video_path(path)
    count = 0
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            with iio.imopen(tmp, "w", extension=".gif", plugin="pillow") as f:
                for frame in frames:
                    f.write(frame, duration=round(1000 / fps), loop=0)
                    count += 1
        else:
            import imageio_ffmpeg

            writer = None
            for frame in frames:
                # H.264 in yuv420p needs even sides: drop the last row/column if odd (no rescaling).
                h, w = frame.shape[:2]
                frame = np.ascontiguousarray(frame[: h - h % 2, : w - w % 2])
                if writer is None:
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp), (frame.shape[1], frame.shape[0]), fps=fps, codec="libx264", quality=8,
                        macro_block_size=1, output_params=["-f", "mp4"], ffmpeg_log_level="error")
                    writer.send(None)  # start ffmpeg
                writer.send(frame)
                count += 1
            if writer is not None:
                writer.close()
    return count
