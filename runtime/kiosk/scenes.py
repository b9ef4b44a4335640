"""What a kiosk shows: scenes that render a few frames at a time. Torch-free.

A scene renders a few frames at a time from a model (a BundleGenerator for a stylegan bundle, the
DreamEngine of a dream bundle) and moves its own position forward only when they are done, so
after an engine error the producer re-opens the model and the scene carries on from the same frame.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from gen.runtime.dream.feedback import FeedbackSettings, feedback_frames, zoom_rotate
from gen.runtime.dream.loop import DreamEngine, DreamSettings, GradientFn
from gen.runtime.errors import GenError
from gen.runtime.images import IMAGE_SUFFIXES, blend, load_image, resize
from gen.runtime.stylegan.walk import WalkSettings, path_images, walk_keys

log = logging.getLogger("gen.kiosk")
ORDERS = ("random", "loop")


def check_order(order: str) -> None:
    """Refuse a walk order other than random (the next seed drawn) or loop (the pool in order)."""
    if order not in ORDERS:
        raise GenError(f"unknown order '{order}'; choose random or loop")


class Scene(Protocol):
    done: bool

    def render(self, model) -> np.ndarray:
        """The next few uint8 frames [N, H, W, 3]; the position moves on only if this returns."""
        ...


CAMERA_LEGS = 4  # a random walk's StyleGAN3 camera goes out and back once every 4 seeds


class WalkScene:
    """An endless walk: seed a to seed b, then on to the next seed of the pool, and so on, forever.

    Each leg is a stretch of gen walk's path (the same eased slerp in z or lerp in w, the same frame
    times), so a leg's first frame is its seed's gen sample picture (a moving StyleGAN3 camera aside).
    `order` loop goes round the pool in order (gen walk's loop, repeated); random draws the next seed with a
    seeded RNG, never the same twice in a row, so the walk never repeats and a run is reproducible from its seed.
    """

    done = False  # a walk has no end; only the n key moves on

    def __init__(self, pool: Sequence[int], settings: WalkSettings, rng: random.Random, order: str = "random",
                 start: int | None = None, batch: int = 8) -> None:
        if len(set(pool)) < 2:
            raise GenError("a kiosk walk needs a pool of at least 2 different seeds, e.g. --seeds 0-99")
        check_order(order)
        self.pool, self.settings, self.rng, self.order, self.batch = list(pool), settings, rng, order, batch
        self.index = self.pool.index(start) if start is not None else self._draw(None)
        self.start = self.pool[self.index]
        self.next_index = self._draw(self.index)
        self.k = 0  # frame within the leg
        self.legs = 0  # legs finished: the camera's clock (StyleGAN3), which runs on across legs
        self.keys: np.ndarray | None = None  # the leg's two keyframe latents, computed once per leg

    def _draw(self, index: int | None) -> int:
        if self.order == "loop":
            return 0 if index is None else (index + 1) % len(self.pool)
        while True:  # a rejection draw: no per-leg list of the pool, however large it is
            i = self.rng.randrange(len(self.pool))
            if index is None or self.pool[i] != self.pool[index]:
                return i

    @property
    def seeds(self) -> tuple[int, int]:
        """The seeds this leg runs between."""
        return self.pool[self.index], self.pool[self.next_index]

    def render(self, gen) -> np.ndarray:
        n = self.settings.frames_per_seed
        if self.keys is None:
            self.keys = walk_keys(gen, list(self.seeds), self.settings)
        times = np.arange(self.k, min(self.k + self.batch, n), dtype=np.float64) / n
        # the camera's path closes with the loop round the pool, or every CAMERA_LEGS legs of a random walk
        period = len(self.pool) if self.order == "loop" else CAMERA_LEGS
        frames = path_images(gen, self.keys, times, self.settings, self.legs + times, period)
        self.k += len(times)
        if self.k == n:
            self.index, self.next_index = self.next_index, self._draw(self.next_index)
            self.k, self.keys, self.legs = 0, None, self.legs + 1
        return frames


class DreamScene:
    """A slow dream zoom into one photo: gen dream --frames' feedback loop, with frames in between.

    Each keyframe is dreamed from the last one zoomed (and turned); `tween` frames lead from one
    keyframe to the next, zooming smoothly while they crossfade, so the motion is continuous at any fps
    however long a keyframe takes. They are rendered `batch` at a time (like a walk's leg), so the first
    of them reach the screen while the rest are still to be made, and memory does not grow with
    speed x fps. The scene is done after `feedback.frames` keyframes.
    """

    def __init__(self, photo: np.ndarray, settings: DreamSettings, feedback: FeedbackSettings, tween: int,
                 batch: int = 4) -> None:
        self.photo, self.settings, self.feedback = photo, settings, feedback
        self.tween, self.batch = max(1, tween), max(1, batch)
        self.key: np.ndarray | None = None  # the last keyframe: the segment runs from it ...
        self.target: np.ndarray | None = None  # ... to this one
        self.j = 0  # frame within the segment
        self.keyframes = 0  # segments finished (+1 for the first keyframe)
        self._keys: Iterator[np.ndarray] | None = None
        # The engine's gradient, held in a list the loop reads through: a lambda over self would make a cycle
        # (scene -> loop -> lambda -> scene) that only a full collection frees: a finished scene stayed in
        # memory, ~1 MiB each, and the collection, when it ran, stalled the display ~160 ms.
        self._gradient: list[GradientFn | None] = [None]

    @property
    def done(self) -> bool:
        return self.keyframes >= self.feedback.frames

    def _next_key(self, engine: DreamEngine) -> np.ndarray:
        self._gradient[0] = engine.gradient  # a re-opened engine takes over the running loop
        if self._keys is None:  # first, or after an error ended the loop: go on from the last keyframe
            start = self.photo if self.key is None else zoom_rotate(self.key, self.feedback.zoom, self.feedback.rotate)
            gradient = self._gradient
            self._keys = feedback_frames(start, lambda x: gradient[0](x), self.settings, self.feedback)
        try:
            return next(self._keys)
        except BaseException:
            self._keys = None
            raise

    def render(self, engine: DreamEngine) -> np.ndarray:
        if self.key is None:
            self.key = self._next_key(engine)
            self.keyframes = 1
            if self.done:
                return self.key[None]
        if self.target is None:
            self.target = self._next_key(engine)
        end = min(self.j + self.batch, self.tween)
        frames = np.stack([self.between(self.key, self.target, j / self.tween) for j in range(self.j, end)])
        self.j = end
        if self.j == self.tween:
            self.key, self.target, self.j, self.keyframes = self.target, None, 0, self.keyframes + 1
        return frames

    def between(self, a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
        """The view at t in [0, 1) of the way from keyframe a to b: a zoomed by zoom^t, b by zoom^(t-1), blended."""
        if t == 0:
            return a
        zoom, rotate = self.feedback.zoom, self.feedback.rotate
        return blend(zoom_rotate(a, zoom**t, rotate * t), zoom_rotate(b, zoom ** (t - 1), rotate * (t - 1)), t)


def find_photos(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders searched for images (sorted); refuses an empty result before anything starts."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.exists():  # (a FIFO or a device too: load_image refuses it by name, never opening it)
            found.append(p)
        else:
            raise GenError(f"photo '{p}' does not exist")
    if not found:
        raise GenError("no photos to dream on: give --photo FILE_OR_FOLDER")
    return found


def usable_photos(paths: Sequence[Path], min_side: int) -> list[Path]:
    """The photos that load (each is decoded once, at start-up); one warning for those that do not."""
    good, bad = [], []
    for path in find_photos(paths):
        try:
            load_image(path, min_size=min_side)
        except GenError as e:  # images.py says what is wrong: damaged, truncated, a decompression bomb, ...
            bad.append(str(e))
        except Exception as e:  # anything else one file provokes (a MemoryError on a small device): still one photo
            bad.append(f"'{path}': {type(e).__name__}: {e}")
        else:
            good.append(path)
    if bad:
        log.warning("skipping %d photo(s) that cannot be used: %s", len(bad), "; ".join(bad[:3])
                    + ("; ..." if len(bad) > 3 else ""))
    if not good:
        raise GenError(f"none of the {len(bad)} photo(s) can be used: {bad[0]}")
    return good


def fit_long_side(rgb: np.ndarray, side: int, min_side: int) -> np.ndarray:
    """Scale so the long side is `side` (aspect kept), but the short side at least the backbone's minimum."""
    h, w = rgb.shape[:2]
    scale = max(side / max(h, w), min_side / min(h, w))
    return resize(rgb, max(min_side, round(w * scale)), max(min_side, round(h * scale)))
