"""A kiosk's settings, checked once when made: what it shows, how fast, and when it gives up."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from gen.runtime.dream.feedback import FeedbackSettings
from gen.runtime.dream.loop import DreamSettings
from gen.runtime.errors import GenError
from gen.runtime.stylegan.walk import WalkSettings

from .scenes import check_order

MAX_POOL = 1_000_000  # seeds in a walk's pool: the pool is a list in memory


@dataclass(frozen=True)
class KioskSettings:
    fps: float = 60.0  # a new frame at every refresh of a 60 Hz screen (a slow machine: 30)
    speed: float = 4.0  # seconds per seed (walk) or per dream keyframe
    crossfade: float = 1.0  # seconds of crossfade into a new scene
    ahead: float = 1.0  # seconds of frames made ahead (the queue's bound)
    seed: int = 0  # of the walk's seed choices
    order: str = "random"
    walk: WalkSettings = field(default_factory=WalkSettings)  # psi, space, noise; its pace is paced_walk()'s
    photos: tuple[Path, ...] = ()
    size: int = 384  # dream: long side of the dreamed picture
    zoom: float = 1.03  # dream: zoom per keyframe
    rotate: float = 0.0
    scene_seconds: float = 60.0  # dream: time on one photo before the next
    dream: DreamSettings = field(default_factory=partial(DreamSettings, octaves=2, iterations=4))
    max_failures: int = 10  # failed tries in a row (engine or scene) before the kiosk exits with status 1
    watchdog: float = 300.0  # seconds without a new frame (the queue having room) before it exits; 0: never

    def __post_init__(self) -> None:  # also run by dataclasses.replace: no kiosk settings exist unchecked
        if not self.fps > 0 or not self.speed > 0:
            raise GenError(f"fps and speed must be positive (got {self.fps}, {self.speed})")
        if self.crossfade < 0 or not self.ahead > 0 or not self.scene_seconds > 0:
            raise GenError("crossfade must be 0 or more seconds; ahead and scene seconds must be positive")
        check_order(self.order)
        if not 32 <= self.size <= 4096:
            raise GenError(f"size must be between 32 and 4096 pixels (got {self.size})")
        if self.max_failures < 1 or self.watchdog < 0:
            raise GenError("max failures must be at least 1 and the watchdog 0 (off) or more seconds")
        # Settings made from several fields check themselves when made: make them now, not in the frame thread.
        self.paced_walk()
        self.paced_feedback()

    def paced_walk(self) -> WalkSettings:
        """The walk at the kiosk's pace: `speed` seconds per seed at `fps`."""
        return replace(self.walk, fps=self.fps, seconds_per_seed=self.speed)

    def paced_feedback(self) -> FeedbackSettings:
        """The dream zoom at the kiosk's pace: a keyframe every `speed` seconds, `scene_seconds` on a photo."""
        keyframes = max(1, round(self.scene_seconds / self.speed))
        return FeedbackSettings(frames=keyframes, zoom=self.zoom, rotate=self.rotate, fps=self.fps)
