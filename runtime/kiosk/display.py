"""The kiosk's window: pygame-ce (SDL 2), fullscreen on one display, the cursor hidden.

Each tick of a clock held at the target fps takes the next frame if one is ready (it never waits for
one: the producer works ahead in its own thread) and scales it to the screen with smoothing, letterboxed
to keep its shape. Keys: q or Esc quit, space pauses, s saves the frame shown, n starts the next scene.

Without a display (no DISPLAY or WAYLAND_DISPLAY: a service started before the desktop) pygame-ce
would quietly draw into memory ('offscreen'), a kiosk that runs and shows nothing; that is an error
here, so the process exits and systemd tries again, unless SDL_VIDEODRIVER was set on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gen.runtime.errors import GenError, require_extra

from .player import Player

HEADLESS_DRIVERS = ("offscreen", "dummy")


@dataclass(frozen=True)
class Window:
    """Where the kiosk shows its frames: fullscreen on `display` (0 = the first), or a window of `size`
    (testing); `frames` > 0 quits after showing that many new frames (tests, benchmarks)."""

    windowed: bool = False
    display: int = 0
    size: tuple[int, int] = (960, 540)
    frames: int = 0

    def __post_init__(self) -> None:
        if min(self.size) < 1:
            raise GenError(f"window size must be positive (got {self.size[0]}x{self.size[1]})")
        if self.display < 0 or self.frames < 0:
            raise GenError(f"display and frames must be 0 or more (got {self.display}, {self.frames})")


def import_pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # its banner would land in the journal every start
    require_extra("pygame", "kiosk")
    import pygame

    return pygame


def fit(size: tuple[int, int], screen: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, width, height) of a picture of `size` scaled to fill `screen` with its aspect ratio kept."""
    w, h = size
    scale = min(screen[0] / w, screen[1] / h)
    fw, fh = max(1, round(w * scale)), max(1, round(h * scale))
    return (screen[0] - fw) // 2, (screen[1] - fh) // 2, fw, fh


def show(player: Player, fps: float, window: Window = Window(),
         on_frame: Callable[[np.ndarray, object], None] | None = None) -> int:
    """Run the window until q (or `window.frames` new frames were shown); returns how many were shown.

    `on_frame(frame, screen)` is called after each new frame is on the screen (tests, benchmarks).
    """
    pg = import_pygame()
    try:
        return _show(pg, player, fps, window, on_frame)
    except pg.error as e:
        raise GenError(f"the kiosk window failed: {e}") from None


def _show(pg, player: Player, fps: float, window: Window, on_frame: Callable[[np.ndarray, object], None] | None
          ) -> int:
    chosen = os.environ.get("SDL_VIDEODRIVER")  # (read before init: pygame may set its own fallback)
    pg.display.init()
    try:
        driver = pg.display.get_driver()
        if driver in HEADLESS_DRIVERS and not chosen:
            raise GenError(f"no display: SDL fell back to its '{driver}' driver, so the window would show nothing; "
                           "set DISPLAY (e.g. DISPLAY=:0) or run under a desktop session, or use --serve")
        displays, display = pg.display.get_num_displays(), window.display
        if not 0 <= display < displays:
            raise GenError(f"display {display} does not exist; this machine has {displays} (0-{displays - 1})")
        if window.windowed:
            screen = pg.display.set_mode(window.size, pg.RESIZABLE, display=display)
        else:
            screen = pg.display.set_mode((0, 0), pg.FULLSCREEN, display=display)  # (0, 0): the display's own size
        pg.display.set_caption("gen kiosk")
        pg.mouse.set_visible(False)
        keys = {pg.K_q: "q", pg.K_ESCAPE: "escape", pg.K_SPACE: "space", pg.K_s: "s", pg.K_n: "n"}
        clock = pg.time.Clock()
        shown, picture, dirty = 0, None, False
        while not player.quit:
            for event in pg.event.get():
                if event.type == pg.QUIT:
                    player.press("q")
                elif event.type == pg.KEYDOWN and event.key in keys:
                    player.press(keys[event.key])
                elif event.type in (pg.VIDEORESIZE, pg.WINDOWEXPOSED, pg.WINDOWSIZECHANGED):
                    dirty = picture is not None
            if player.quit:
                break
            new = player.tick()
            if new:  # scale once per new frame, not once per tick
                frame = player.frame
                surface = pg.image.frombuffer(np.ascontiguousarray(frame).tobytes(), frame.shape[1::-1], "RGB")
                x, y, w, h = fit(frame.shape[1::-1], screen.get_size())
                picture = (pg.transform.smoothscale(surface, (w, h)), (x, y))
            if (new or dirty) and picture is not None:
                screen.fill((0, 0, 0))
                screen.blit(*picture)
                pg.display.flip()
                dirty = False
            if new:
                shown += 1
                if on_frame is not None:
                    on_frame(player.frame, screen)
                if window.frames and shown >= window.frames:
                    break
            clock.tick(fps)
    finally:
        pg.display.quit()
    return shown
