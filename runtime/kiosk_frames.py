"""What a kiosk shows: endless scenes of frames, made ahead in a background thread. Torch-free.

A scene renders a few frames at a time from a model (a BundleGenerator for a stylegan bundle, the
gradient function of a dream bundle) and moves its own position forward only when they are done, so
after an engine error the producer re-opens the model and the scene carries on from the same frame.
Frames wait in a bounded queue: the display takes at most one per tick and never waits, and memory
stays flat however long the kiosk runs.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from .dream import DreamSettings, GradientFn
from .dream_video import FeedbackSettings, feedback_frames, zoom_rotate
from .errors import GenError
from .images import IMAGE_SUFFIXES, load_image, resize, save_image
from .walk import WalkSettings, path_images, walk_keys

log = logging.getLogger("gen.kiosk")
ORDERS = ("random", "loop")


class Scene(Protocol):
    done: bool

    def render(self, model) -> np.ndarray:
        """The next few uint8 frames [N, H, W, 3]; the position moves on only if this returns."""
        ...


class WalkScene:
    """An endless walk: seed a to seed b, then on to the next seed of the pool, and so on, forever.

    Each leg is a stretch of gen walk's path (the same eased slerp in z or lerp in w, the same frame
    times), so a leg's first frame is its seed's gen sample picture. `order` loop goes round the pool
    in order (gen walk's loop, repeated); random draws the next seed with a seeded RNG, never the same
    twice in a row, so the walk never repeats and a run is reproducible from its seed.
    """

    done = False  # a walk has no end; only the n key moves on

    def __init__(self, pool: Sequence[int], settings: WalkSettings, rng: random.Random, order: str = "random",
                 start: int | None = None, batch: int = 8) -> None:
        if len(set(pool)) < 2:
            raise GenError("a kiosk walk needs a pool of at least 2 different seeds, e.g. --seeds 0-99")
        if order not in ORDERS:
            raise GenError(f"unknown order '{order}'; choose random or loop")
        self.pool, self.settings, self.rng, self.order, self.batch = list(pool), settings.check(), rng, order, batch
        self.index = self.pool.index(start) if start is not None else self._draw(None)
        self.start = self.pool[self.index]
        self.next_index = self._draw(self.index)
        self.k = 0  # frame within the leg
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
        frames = path_images(gen, self.keys, times, self.settings)
        self.k += len(times)
        if self.k == n:
            self.index, self.next_index = self.next_index, self._draw(self.next_index)
            self.k, self.keys = 0, None
        return frames


class DreamScene:
    """A slow dream zoom into one photo: gen dream --frames' feedback loop, with frames in between.

    Each keyframe is dreamed from the last one zoomed (and turned); `tween` frames lead from one
    keyframe to the next, zooming smoothly while they crossfade, so the motion is continuous at any fps
    however long a keyframe takes. The scene is done after `feedback.frames` keyframes.
    """

    def __init__(self, photo: np.ndarray, settings: DreamSettings, feedback: FeedbackSettings, tween: int) -> None:
        self.photo, self.settings, self.feedback = photo, settings.check(), feedback.check()
        self.tween = max(1, tween)
        self.key: np.ndarray | None = None  # the last keyframe
        self.keyframes = 0
        self._keys: Iterator[np.ndarray] | None = None
        self._gradient: GradientFn | None = None

    @property
    def done(self) -> bool:
        return self.keyframes >= self.feedback.frames

    def _next_key(self, gradient: GradientFn) -> np.ndarray:
        self._gradient = gradient  # a re-opened engine takes over the running loop
        if self._keys is None:  # first, or after an error ended the loop: go on from the last keyframe
            start = self.photo if self.key is None else zoom_rotate(self.key, self.feedback.zoom, self.feedback.rotate)
            self._keys = feedback_frames(start, lambda x: self._gradient(x), self.settings, self.feedback)
        try:
            return next(self._keys)
        except BaseException:
            self._keys = None
            raise

    def render(self, gradient: GradientFn) -> np.ndarray:
        if self.key is None:
            self.key = self._next_key(gradient)
            self.keyframes = 1
            if self.done:
                return self.key[None]
        key = self._next_key(gradient)
        frames = np.stack([self.between(self.key, key, j / self.tween) for j in range(self.tween)])
        self.key, self.keyframes = key, self.keyframes + 1
        return frames

    def between(self, a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
        """The view at t in [0, 1) of the way from keyframe a to b: a zoomed by zoom^t, b by zoom^(t-1), blended."""
        if t == 0:
            return a
        zoom, rotate = self.feedback.zoom, self.feedback.rotate
        za = zoom_rotate(a, zoom**t, rotate * t).astype(np.float32)
        zb = zoom_rotate(b, zoom ** (t - 1), rotate * (t - 1)).astype(np.float32)
        return np.clip(np.rint(za + (zb - za) * t), 0, 255).astype(np.uint8)


def blend(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """(1 - t) a + t b, uint8; a is resized to b's size first (photos differ in shape)."""
    if a.shape != b.shape:
        a = resize(a, b.shape[1], b.shape[0])
    mixed = a.astype(np.float32) + (b.astype(np.float32) - a) * np.float32(t)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


class FrameProducer:
    """Renders scenes in a background thread into a bounded queue; survives engine errors.

    `open_model()` opens the engine (again after an error); `new_scene()` makes the next scene. A
    failure in either, or in a scene's render, is logged and retried after a pause that doubles up to
    `retry_max` seconds, with the model re-opened, so a kiosk left alone recovers by itself.
    """

    def __init__(self, open_model: Callable[[], object], new_scene: Callable[[], Scene], crossfade_frames: int = 0,
                 ahead: int = 30, retry_min: float = 0.5, retry_max: float = 30.0) -> None:
        self.open_model, self.new_scene = open_model, new_scene
        self.crossfade_frames = max(0, crossfade_frames)
        self.retry_min, self.retry_max = retry_min, retry_max
        self.queue: queue.Queue[tuple[int, np.ndarray]] = queue.Queue(maxsize=max(1, ahead))  # (scene number, frame)
        self.model: object | None = None
        self.scene: Scene | None = None
        self.shown: np.ndarray | None = None  # the frame the viewer sees now: crossfades start from it
        self.opened = self.errors = self.produced = 0
        self._stop = threading.Event()
        self._wanted = self._making = 0  # scene numbers: the one the viewer asked for (n), the one being made
        self._fade_from: np.ndarray | None = None
        self._fade_left = 0
        self._thread = threading.Thread(target=self._run, name="kiosk-frames", daemon=True)

    def start(self) -> FrameProducer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def get(self) -> np.ndarray | None:
        """The next frame if one is ready, else None (the caller shows its current frame again)."""
        while True:
            try:
                scene, frame = self.queue.get_nowait()
            except queue.Empty:
                return None
            if scene == self._wanted:  # frames of a scene left with n are dropped, however far ahead they were
                self.shown = frame
                return frame

    def next_scene(self) -> None:
        self._wanted += 1

    def _run(self) -> None:
        delay = self.retry_min
        while not self._stop.is_set():
            try:
                if self.model is None:
                    self.model = self.open_model()
                    self.opened += 1
                if self.scene is None or self.scene.done or self._making != self._wanted:
                    self._start_scene()
                frames = self.scene.render(self.model)
            except Exception as e:  # an engine error must not freeze the screen: log, re-open, go on
                self.errors += 1
                log.error("frame producer failed (%s: %s); re-opening the engine in %.1f s",
                          type(e).__name__, e, delay, exc_info=log.isEnabledFor(logging.DEBUG))
                self.model = None
                self._stop.wait(delay)
                delay = min(2 * delay, self.retry_max)
                continue
            delay = self.retry_min
            for frame in frames:
                if not self._put(self._faded(frame)):
                    break  # a new scene was asked for (or stop): the rest of this batch is dropped

    def _start_scene(self) -> None:
        self._making = self._wanted
        self.scene = None  # (if new_scene fails, the next try makes a scene again)
        self.scene = self.new_scene()
        self._fade_from = self.shown  # None before the first frame was shown: nothing to fade from
        self._fade_left = self.crossfade_frames if self._fade_from is not None else 0

    def _faded(self, frame: np.ndarray) -> np.ndarray:
        if self._fade_left <= 0:
            return frame
        total = self.crossfade_frames
        t = (total - self._fade_left + 1) / (total + 1)
        self._fade_left -= 1
        return blend(self._fade_from, frame, t)

    def _put(self, frame: np.ndarray) -> bool:
        while not self._stop.is_set() and self._making == self._wanted:
            try:
                self.queue.put((self._making, frame), timeout=0.1)
            except queue.Full:
                continue
            self.produced += 1
            return True
        return False


@dataclass(frozen=True)
class KioskSettings:
    fps: float = 30.0
    speed: float = 4.0  # seconds per seed (walk) or per dream keyframe
    crossfade: float = 1.0  # seconds of crossfade into a new scene
    ahead: float = 1.0  # seconds of frames made ahead (the queue's bound)
    seed: int = 0  # of the walk's seed choices
    order: str = "random"
    walk: WalkSettings = field(default_factory=WalkSettings)  # psi, space, noise (fps, speed come from here)
    photos: tuple[Path, ...] = ()
    size: int = 384  # dream: long side of the dreamed picture
    zoom: float = 1.03  # dream: zoom per keyframe
    rotate: float = 0.0
    scene_seconds: float = 60.0  # dream: time on one photo before the next
    dream: DreamSettings = field(default_factory=lambda: DreamSettings(octaves=2, iterations=4))

    def check(self) -> KioskSettings:
        if not self.fps > 0 or not self.speed > 0:
            raise GenError(f"fps and speed must be positive (got {self.fps}, {self.speed})")
        if self.crossfade < 0 or not self.ahead > 0 or not self.scene_seconds > 0:
            raise GenError("crossfade must be 0 or more seconds; ahead and scene seconds must be positive")
        if self.order not in ORDERS:
            raise GenError(f"unknown order '{self.order}'; choose random or loop")
        if not 32 <= self.size <= 4096:
            raise GenError(f"size must be between 32 and 4096 pixels (got {self.size})")
        FeedbackSettings(zoom=self.zoom, rotate=self.rotate).check()
        replace(self.walk, fps=self.fps, seconds_per_seed=self.speed).check()
        return self


def find_photos(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders searched for images (sorted); refuses an empty result before anything starts."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise GenError(f"photo '{p}' does not exist")
    if not found:
        raise GenError("no photos to dream on: give --photo FILE_OR_FOLDER")
    return found


def fit_long_side(rgb: np.ndarray, side: int, min_side: int) -> np.ndarray:
    """Scale so the long side is `side` (aspect kept), but the short side at least the backbone's minimum."""
    h, w = rgb.shape[:2]
    scale = max(side / max(h, w), min_side / min(h, w))
    return resize(rgb, max(min_side, round(w * scale)), max(min_side, round(h * scale)))


def make_producer(bundle, settings: KioskSettings, pool: Sequence[int], engine: str = "auto") -> FrameProducer:
    """The producer for a loaded bundle: an endless walk (stylegan) or dream zooms of the photos in turn (dream)."""
    settings.check()
    fps = settings.fps
    common = dict(crossfade_frames=round(settings.crossfade * fps), ahead=max(2, round(settings.ahead * fps)))
    if bundle.manifest.kind == "stylegan":
        from .generator import BundleGenerator

        walk = replace(settings.walk, fps=fps, seconds_per_seed=settings.speed)
        rng = random.Random(settings.seed)
        WalkScene(pool, walk, random.Random(), settings.order)  # refuses a bad pool here, not in the thread
        scenes = 0

        def new_walk() -> WalkScene:
            nonlocal scenes
            scenes += 1  # the first walk of a loop starts at the pool's first seed, like gen walk; n: a random one
            start = pool[0] if settings.order == "loop" and scenes == 1 else pool[rng.randrange(len(pool))]
            return WalkScene(pool, walk, rng, settings.order, start=start)

        return FrameProducer(lambda: BundleGenerator(bundle, engine), new_walk, **common)
    if bundle.manifest.kind == "dream":
        from .dream_engine import bundle_gradient

        photos = find_photos(settings.photos)
        min_side = bundle.manifest.dream.min_size
        dream_settings = replace(settings.dream, min_side=min_side, seed=settings.seed).check()
        keyframes = max(1, round(settings.scene_seconds / settings.speed))
        feedback = FeedbackSettings(frames=keyframes, zoom=settings.zoom, rotate=settings.rotate, fps=fps)
        turn = -1

        def new_dream() -> DreamScene:
            nonlocal turn
            turn = (turn + 1) % len(photos)  # moves on first: an unreadable photo is skipped on the retry
            photo = fit_long_side(load_image(photos[turn], min_size=min_side), settings.size, min_side)
            return DreamScene(photo, dream_settings, feedback, tween=round(settings.speed * fps))

        return FrameProducer(lambda: bundle_gradient(bundle, engine)[0], new_dream, **common)
    raise GenError(f"'{bundle.path}' is a {bundle.manifest.kind} bundle; the kiosk plays stylegan or dream bundles")


class Player:
    """What a viewer controls, for the window and the web page alike: pause, save, next scene, quit."""

    def __init__(self, producer: FrameProducer, save_dir: Path = Path(".")) -> None:
        self.producer, self.save_dir = producer, save_dir
        self.paused = self.quit = False

    @property
    def frame(self) -> np.ndarray | None:
        return self.producer.shown

    def tick(self) -> bool:
        """Take the next frame unless paused; True when there is a new one to show."""
        return not self.paused and self.producer.get() is not None

    def press(self, key: str) -> Path | None:
        if key in ("q", "escape"):
            self.quit = True
        elif key == "space":
            self.paused = not self.paused
        elif key == "n":
            self.producer.next_scene()
        elif key == "s" and self.frame is not None:
            path = save_frame(self.frame, self.save_dir)
            log.info("saved %s", path)
            return path
        return None


def save_frame(frame: np.ndarray, folder: Path) -> Path:
    """kiosk-YYYYmmdd-HHMMSS.png in `folder` (-2, -3, ... if taken), written atomically."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = folder / f"kiosk-{stamp}{'' if n == 1 else f'-{n}'}.png"
        if not path.exists():
            return save_image(path, frame)
    raise GenError(f"too many saved frames this second in '{folder}'")


def wait_frames(producer: FrameProducer, count: int, timeout: float = 60.0) -> list[np.ndarray]:
    """Take `count` frames as they come (tests and benchmarks; a display never waits like this)."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < count:
        frame = producer.get()
        if frame is not None:
            out.append(frame)
        elif time.monotonic() > deadline:
            raise TimeoutError(f"{len(out)} of {count} frames in {timeout} s")
        else:
            time.sleep(0.002)
    return out
