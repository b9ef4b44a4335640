"""`gen dream` as a library call: an image file in, a dreamed still or zoom animation written atomically.

Everything cheap (the output path, the image, the mask) is checked before the engine is opened, since
opening one may load a network for seconds. The engine comes in from the caller (PyTorch or a bundle):
this module, like all of gen.runtime, never imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gen.runtime.errors import GenError
from gen.runtime.files import check_output_path
from gen.runtime.images import STILL_SUFFIXES, load_image, save_image
from gen.runtime.progress import progress_bar, rate_text
from gen.runtime.video import VIDEO_SUFFIXES, check_video_path, write_video

from .feedback import FeedbackSettings, feedback_frames
from .loop import DreamEngine, DreamSettings, StepInfo, count_steps, dream, load_mask


@dataclass(frozen=True)
class DreamResult:
    path: Path
    width: int
    height: int
    frames: int  # 0 for a still
    seconds: float

    @property
    def message(self) -> str:
        what = f"{self.frames} frames" if self.frames else f"{self.width}x{self.height}"
        return f"wrote {self.path} ({what}, {self.seconds:.1f} s)"


def _default_output(image: Path, suffix: str) -> Path:
    """IMAGE-dream.png in the current folder, or -dream-2, -dream-3, ...: never an existing file."""
    for n in range(1, 10_000):
        path = Path(f"{image.stem}-dream{'' if n == 1 else f'-{n}'}{suffix}")
        if not path.exists():
            return path
    raise GenError(f"too many dreams of '{image}' in this folder; give --out")


def _check_output(image: Path, out: Path | None, animation: bool, overwrite: bool) -> Path:
    """The path to write: the default name, or `out` once its suffix fits and it replaces nothing unasked."""
    if out is None:
        return _default_output(image, ".gif" if animation else ".png")
    suffix = out.suffix.lower()
    if animation and suffix not in VIDEO_SUFFIXES:
        raise GenError(f"'{out}': with --frames the output is an animation, .gif or .mp4")
    if not animation and suffix in VIDEO_SUFFIXES:
        raise GenError(f"'{out}' is an animation; pass --frames N (and --zoom, --rotate) to make one")
    if not animation and suffix not in STILL_SUFFIXES:
        raise GenError(f"cannot write '{suffix or out.name}' images; use .png, .jpg or .webp")
    if out.exists() and image.exists() and out.resolve() == image.resolve() and not overwrite:
        raise GenError(f"'{out}' is the input image; pass --overwrite to replace it, or choose another --out")
    if animation:
        check_video_path(out)
    return check_output_path(out, overwrite=overwrite)


def dream_to_file(
    image: str | Path,
    open_engine: Callable[[], DreamEngine],
    out: str | Path | None = None,
    settings: DreamSettings = DreamSettings(),
    feedback: FeedbackSettings | None = None,
    mask: str | Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    announce: Callable[[str], None] | None = None,
) -> DreamResult:
    """Dream on the picture at `image` and write `out`: a still, or with `feedback` a .gif/.mp4 zoom.

    `open_engine` is called once the cheap checks pass; the engine is closed when done. Its smallest
    image side replaces `settings.min_side`. `announce` gets one line (size, engine, steps) before the
    first step. Without `out`, IMAGE-dream.png (or .gif) is written in the current folder.
    """
    image = Path(image)
    out = _check_output(image, None if out is None else Path(out), feedback is not None, overwrite)
    rgb = load_image(image, min_size=settings.min_side)
    height, width = rgb.shape[:2]
    mask_array = load_mask(mask, height, width) if mask is not None else None
    with open_engine() as engine:
        settings = replace(settings, min_side=engine.min_side)
        total = count_steps(height, width, settings) * (feedback.frames if feedback else 1)  # refuses small images
        if announce is not None:
            announce(f"dreaming {width}x{height} with {engine.description}: {total} steps")
        start = time.perf_counter()
        frames = _dream_with_progress(rgb, engine, settings, feedback, mask_array, out, total, show_progress)
    return DreamResult(out, width, height, frames, time.perf_counter() - start)


def _dream_with_progress(rgb: np.ndarray, engine: DreamEngine, settings: DreamSettings,
                         feedback: FeedbackSettings | None, mask: np.ndarray | None, out: Path, total: int,
                         show_progress: bool) -> int:
    """Dream and write `out` under a progress bar; the number of frames written (0 for a still)."""
    start = time.perf_counter()
    # Not transient: after a long dream the bar stays, with its rate and time, above the 'wrote' line.
    with progress_bar(transient=False, disable=not show_progress) as bar:
        task = bar.add_task("dream", total=total, rate="", info="")
        done = 0

        def on_step(s: StepInfo) -> None:
            nonlocal done
            done += 1
            bar.update(task, advance=1, rate=rate_text(done, time.perf_counter() - start, "step"),
                       info=f"octave {s.octave}/{s.octaves} {s.size[1]}x{s.size[0]} objective {s.objective:.4g}")

        if feedback is None:
            save_image(out, dream(rgb, engine.gradient, settings, mask, on_step))
            return 0
        return write_video(out, feedback_frames(rgb, engine.gradient, settings, feedback, mask, on_step),
                           feedback.fps)
