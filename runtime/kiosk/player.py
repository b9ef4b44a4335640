"""What a kiosk's viewer controls, for the window and the web page alike: pause, save, next scene, quit."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from gen.runtime.errors import GenError
from gen.runtime.images import save_image

from .producer import FrameProducer

log = logging.getLogger("gen.kiosk")


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

