"""The kiosk's frame producer: scenes rendered ahead in a background thread, and its watchdog. Torch-free.

Frames wait in a bounded queue: the display takes at most one per tick and never waits, and memory
stays flat however long the kiosk runs. Whatever goes wrong in the thread is caught: an engine error
closes the engine and opens it again (after a pause that doubles), a scene that cannot start (an
unreadable photo) is skipped. The display calls `check()` every tick: it raises KioskFailure (the CLI
exits with status 1, so systemd's Restart=on-failure starts the kiosk afresh) when the thread died,
when `max_failures` tries in a row failed, or when no frame was made for `stall_seconds` although the
queue had room.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from gen.runtime.errors import GenError
from gen.runtime.images import blend

from .scenes import Scene

log = logging.getLogger("gen.kiosk")


class KioskFailure(GenError):
    """The kiosk cannot go on by itself; exit with status 1 so that a service manager restarts it."""

    status = 1


class Model(Protocol):
    """What scenes render with (a BundleGenerator, a DreamEngine): an engine that holds memory until closed."""

    def close(self) -> None: ...


class FrameProducer:
    """Renders scenes in a background thread into a bounded queue; survives engine and scene errors.

    `open_model()` opens the engine (again after an engine error, the failed one closed first); the
    thread closes it when it ends (stop, or giving up), so no render is ever under way on a closed engine.
    `new_scene()` makes the next scene (a failure there is the scene's: the engine is kept and the next
    scene tried). Each failure is logged and retried after a pause that doubles from `retry_min` up to
    `retry_max` seconds.

    Given `fps`, the queue grows (once, up to 4x `ahead` and `max_bytes`) to hold 1.5x the longest render
    seen (a dream keyframe dreamed in one go), so the screen does not wait while one is made.
    """

    def __init__(self, open_model: Callable[[], Model], new_scene: Callable[[], Scene], crossfade_frames: int = 0,
                 ahead: int = 30, retry_min: float = 0.5, retry_max: float = 30.0, max_failures: int = 10,
                 stall_seconds: float = 300.0, fps: float | None = None, max_bytes: int = 128 << 20) -> None:
        self.open_model, self.new_scene = open_model, new_scene
        self.crossfade_frames = max(0, crossfade_frames)
        self.retry_min, self.retry_max = retry_min, retry_max
        self.max_failures, self.stall_seconds = max(1, max_failures), stall_seconds
        self.queue: queue.Queue[tuple[int, np.ndarray]] = queue.Queue(maxsize=max(1, ahead))  # (scene number, frame)
        self.fps, self.max_ahead, self.max_bytes = fps, 4 * max(1, ahead), max_bytes
        self.model: Model | None = None
        self.scene: Scene | None = None
        self.shown: np.ndarray | None = None  # the frame the viewer sees now: crossfades start from it
        self.opened = self.errors = self.scene_errors = self.produced = 0
        self.failures = 0  # in a row; a frame made resets it
        self.failure: str | None = None  # why the producer gave up, once it has
        self.progress = time.monotonic()  # the last time a frame was made or the queue was found full
        self._opening = False  # (opening an engine can take minutes: a TensorRT build; not a stall)
        self._stop = threading.Event()
        self._wanted = self._making = 0  # scene numbers: the one the viewer asked for (n), the one being made
        self._fade_from: np.ndarray | None = None
        self._fade_left = 0
        self._thread = threading.Thread(target=self._run, name="kiosk-frames", daemon=True)

    def start(self) -> FrameProducer:
        self.progress = time.monotonic()
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; it closes the engine as it ends (if a render outlasts `timeout`, once that is done)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def check(self) -> None:
        """The watchdog: raise KioskFailure if the producer gave up, died, or stalled."""
        if self.failure is not None:
            raise KioskFailure(self.failure)
        if self._thread.ident is not None and not self._thread.is_alive() and not self._stop.is_set():
            raise KioskFailure("the frame producer stopped unexpectedly")
        stalled = time.monotonic() - self.progress
        if self.stall_seconds and not self._opening and stalled > self.stall_seconds:
            raise KioskFailure(f"no new frame for {stalled:.0f} s (the engine hangs?); exiting so that it restarts")

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
        try:
            self._loop()
        except BaseException as e:  # (nothing should reach here; if it does, the watchdog says so)
            self.failure = f"the frame producer stopped: {type(e).__name__}: {e}"
            log.critical(self.failure, exc_info=True)
        finally:
            self._close_model()

    def _loop(self) -> None:
        delay = self.retry_min
        while not self._stop.is_set():
            if self.scene is None or self.scene.done or self._making != self._wanted:
                try:
                    self._start_scene()
                except Exception as e:  # a scene's own problem (an unreadable photo): keep the engine, try the next
                    self.scene_errors += 1
                    if self._failed(f"cannot start the next scene ({type(e).__name__}: {e})", self.retry_min):
                        return
                    continue
            try:
                if self.model is None:
                    self._opening = True
                    try:
                        self.model = self.open_model()
                    finally:
                        self._opening = False
                        self.progress = time.monotonic()
                    self.opened += 1
                began = time.monotonic()
                frames = self.scene.render(self.model)
                self._grow(time.monotonic() - began, frames)
                for frame in frames:
                    if not self._put(self._faded(frame)):
                        break  # a new scene was asked for (or stop): the rest of this batch is dropped
            except Exception as e:  # an engine error must not freeze the screen: log, re-open, go on
                self.errors += 1
                self._close_model()
                if self._failed(f"frame producer failed ({type(e).__name__}: {e}); re-opening the engine", delay):
                    return
                delay = min(2 * delay, self.retry_max)
                continue
            delay = self.retry_min
            self.failures = 0

    def _close_model(self) -> None:
        model, self.model = self.model, None
        if model is not None:
            model.close()

    def _grow(self, seconds: float, frames: np.ndarray) -> None:
        if self.fps is None or not len(frames):
            return
        cap = min(self.max_ahead, max(1, self.max_bytes // max(1, frames[0].nbytes)))
        wanted = min(cap, math.ceil(1.5 * seconds * self.fps))
        if wanted > self.queue.maxsize:
            with self.queue.mutex:
                self.queue.maxsize = wanted
                self.queue.not_full.notify_all()
            log.info("frames made ahead: %d (a render took %.2f s)", wanted, seconds)

    def _failed(self, message: str, pause: float) -> bool:
        """Log a failure; True (and `failure` set) when there were too many in a row to go on."""
        self.failures += 1
        if self.failures >= self.max_failures:
            self.failure = f"{message}; {self.failures} failures in a row, giving up"
            log.error(self.failure)
            return True
        log.error("%s; trying again in %.1f s", message, pause, exc_info=log.isEnabledFor(logging.DEBUG))
        self._stop.wait(pause)
        return False

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
                self.progress = time.monotonic()  # ahead of the viewer (or paused): waiting is not stalling
                continue
            self.produced += 1
            self.progress = time.monotonic()
            return True
        return False
