"""What a kiosk shows and what its viewer controls: the settings, the producer for a bundle, the player.

Scenes (an endless walk, dream zooms) are in kiosk_scenes, the background thread that renders them
ahead and its watchdog in kiosk_producer. Torch-free.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from .dream import DreamSettings
from .dream_video import FeedbackSettings
from .errors import GenError
from .images import load_image, save_image
from .kiosk_producer import FrameProducer
from .kiosk_scenes import ORDERS, DreamScene, WalkScene, fit_long_side, usable_photos
from .walk import WalkSettings

log = logging.getLogger("gen.kiosk")
MAX_POOL = 1_000_000  # seeds in a walk's pool: the pool is a list in memory


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
    max_failures: int = 10  # failed tries in a row (engine or scene) before the kiosk exits with status 1
    watchdog: float = 300.0  # seconds without a new frame (the queue having room) before it exits; 0: never

    def check(self) -> KioskSettings:
        if not self.fps > 0 or not self.speed > 0:
            raise GenError(f"fps and speed must be positive (got {self.fps}, {self.speed})")
        if self.crossfade < 0 or not self.ahead > 0 or not self.scene_seconds > 0:
            raise GenError("crossfade must be 0 or more seconds; ahead and scene seconds must be positive")
        if self.order not in ORDERS:
            raise GenError(f"unknown order '{self.order}'; choose random or loop")
        if not 32 <= self.size <= 4096:
            raise GenError(f"size must be between 32 and 4096 pixels (got {self.size})")
        if self.max_failures < 1 or self.watchdog < 0:
            raise GenError("max failures must be at least 1 and the watchdog 0 (off) or more seconds")
        FeedbackSettings(zoom=self.zoom, rotate=self.rotate).check()
        replace(self.walk, fps=self.fps, seconds_per_seed=self.speed).check()
        return self


def make_producer(bundle, settings: KioskSettings, pool: Sequence[int], engine: str = "auto") -> FrameProducer:
    """The producer for a loaded bundle: an endless walk (stylegan) or dream zooms of the photos in turn (dream)."""
    settings.check()
    fps = settings.fps
    common = dict(crossfade_frames=round(settings.crossfade * fps), ahead=max(2, round(settings.ahead * fps)),
                  max_failures=settings.max_failures, stall_seconds=settings.watchdog, fps=fps)
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

        min_side = bundle.manifest.dream.min_size
        photos = usable_photos(settings.photos, min_side)  # each decoded once now: bad ones skipped, with a warning
        dream_settings = replace(settings.dream, min_side=min_side, seed=settings.seed).check()
        keyframes = max(1, round(settings.scene_seconds / settings.speed))
        feedback = FeedbackSettings(frames=keyframes, zoom=settings.zoom, rotate=settings.rotate, fps=fps)
        turn = -1

        def new_dream() -> DreamScene:
            nonlocal turn
            turn = (turn + 1) % len(photos)  # moves on first: a photo gone bad since is skipped on the retry
            photo = fit_long_side(load_image(photos[turn], min_size=min_side), settings.size, min_side)
            return DreamScene(photo, dream_settings, feedback, tween=round(settings.speed * fps))

        return FrameProducer(lambda: bundle_gradient(bundle, engine)[0], new_dream, **common)
    raise GenError(f"'{bundle.path}' is a {bundle.manifest.kind} bundle; the kiosk plays stylegan or dream bundles")


class Player:
    """What a viewer controls, for the window and the web page alike: pause, save, next scene, quit.

    s saves at most one frame per `save_every` seconds (a held key, a page's key repeat), and a save
    that fails (a full disk, a folder gone) is logged: the kiosk goes on.
    """

    def __init__(self, producer: FrameProducer, save_dir: Path = Path("."), save_every: float = 1.0) -> None:
        self.producer, self.save_dir, self.save_every = producer, save_dir, save_every
        self.paused = self.quit = False
        self._saved_at = -float("inf")

    @property
    def frame(self) -> np.ndarray | None:
        return self.producer.shown

    def tick(self) -> bool:
        """Take the next frame unless paused; True when there is a new one to show.

        Raises KioskFailure when the producer's watchdog says the kiosk cannot go on by itself.
        """
        self.producer.check()
        return not self.paused and self.producer.get() is not None

    def press(self, key: str) -> Path | None:
        if key in ("q", "escape"):
            self.quit = True
        elif key == "space":
            self.paused = not self.paused
        elif key == "n":
            self.producer.next_scene()
        elif key == "s" and self.frame is not None:
            now = time.monotonic()
            if now - self._saved_at < self.save_every:
                return None
            self._saved_at = now
            try:
                path = save_frame(self.frame, self.save_dir)
            except (OSError, GenError) as e:
                log.error("cannot save the frame in '%s': %s", self.save_dir, e)
                return None
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
