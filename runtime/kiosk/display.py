"""The kiosk's window: pygame-ce (SDL 2), fullscreen on one display, the cursor hidden.

The loop keeps a steady beat at the target fps (FrameClock). Each beat it takes the next frame if one is
ready (it never waits for one: the producer works ahead in its own thread), scales it with smoothing
straight into its letterboxed place on the screen (Picture: no per-frame surfaces, no blit), waits for the
beat and only then flips, so the frame's scaling time does not shift when it appears. Keys: q or Esc quit,
space pauses, s saves the frame shown, n starts the next scene.

Without a display (no DISPLAY or WAYLAND_DISPLAY: a service started before the desktop) pygame-ce
would quietly draw into memory ('offscreen'), a kiosk that runs and shows nothing; that is an error
here, so the process exits and systemd tries again, unless SDL_VIDEODRIVER was set on purpose.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gen.runtime.errors import GenError, require_extra

from .player import Player

HEADLESS_DRIVERS = ("offscreen", "dummy")
SWITCH_INTERVAL = 0.001  # seconds: how long the frame thread may hold the interpreter lock while the display waits


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


class FrameClock:
    """The display loop's beat: wait() returns on a fixed grid of 1/fps seconds, so frames appear at even
    intervals and the rate is the target on average (pygame's Clock waits whole milliseconds counted from its
    last tick: asked for 60 fps it gave 61.8, and a late frame moves all that follow). It sleeps until `spin` s before
    the beat and yields the processor in a loop for the rest (a sleep can wake late on a busy machine).
    A loop that falls more than a beat behind starts a new grid instead of rushing frames to catch up."""

    def __init__(self, fps: float, spin: float = 0.001) -> None:
        self.period, self.spin = 1.0 / fps, spin
        self.beat: float | None = None  # when the last wait returned (on the grid)

    def wait(self) -> None:
        now = time.perf_counter()
        if self.beat is None:
            self.beat = now
            return
        target = self.beat + self.period
        if now >= target:  # late: stay on the grid if less than a beat late, else start a new one from now
            self.beat = target if now - target < self.period else now
            return
        if target - now > self.spin:
            time.sleep(target - now - self.spin)
        while time.perf_counter() < target:
            time.sleep(0)  # (lets the frame thread run meanwhile)
        self.beat = target


class Picture:
    """Frames on the screen, letterboxed, scaled with smoothing (bilinear up, box-averaging down: a 32 px emoji
    is smooth, not blocky, at any size) straight into their place on the screen surface.

    The frame is copied into a small source surface of the screen's pixel format, and smoothscale writes the
    screen's pixels in place: no surface is made per frame, nothing is blitted or converted at full size, and the
    black bars are drawn once per layout. The layout is made again when the frame's or the screen's size changes,
    or after `invalidate()` (a resized or exposed window may have new screen pixels)."""

    def __init__(self, pg) -> None:
        self.pg, self.screen = pg, pg.display.get_surface()
        self._layout: tuple | None = None
        self._source = self._target = self._scaled = None
        self._where: tuple[int, int, int, int] = (0, 0, 1, 1)

    def invalidate(self) -> None:
        self._layout = None

    def draw(self, frame: np.ndarray) -> None:
        pg = self.pg
        h, w = frame.shape[:2]
        layout = (w, h, pg.display.get_surface().get_size())
        if layout != self._layout:
            self._lay_out(w, h)
            self._layout = layout
        x, y, fw, fh = self._where
        self._source.blit(pg.image.frombuffer(np.ascontiguousarray(frame), (w, h), "RGB"), (0, 0))
        if self._scaled is None:
            pg.transform.smoothscale(self._source, (fw, fh), self._target)
        else:  # a screen of 8 or 16 bits a pixel (smoothscale works in 24 or 32): scaled aside, then blitted
            pg.transform.smoothscale(self._source, (fw, fh), self._scaled)
            self.screen.blit(self._scaled, (x, y))

    def _lay_out(self, w: int, h: int) -> None:
        pg = self.pg
        self.screen = screen = pg.display.get_surface()
        self._where = x, y, fw, fh = fit((w, h), screen.get_size())
        screen.fill((0, 0, 0))
        if screen.get_bytesize() in (3, 4):
            self._source = pg.Surface((w, h), 0, screen)  # (the screen's format: smoothscale wants both the same)
            self._target, self._scaled = screen.subsurface((x, y, fw, fh)), None
        else:
            self._source = pg.Surface((w, h), 0, 32)
            self._target, self._scaled = None, pg.Surface((fw, fh), 0, 32)


def show(player: Player, fps: float, window: Window = Window(),
         on_frame: Callable[[np.ndarray, object], None] | None = None) -> int:
    """Run the window until q (or `window.frames` new frames were shown); returns how many were shown.

    `on_frame(frame, screen)` is called after each new frame is on the screen (tests, benchmarks).
    """
    pg = import_pygame()
    # The frame thread runs Python between its numpy and engine calls; when the display wakes for a beat it
    # waits for the interpreter lock, up to the switch interval (5 ms by default): 1 ms keeps frames on time.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
    try:
        return _show(pg, player, fps, window, on_frame)
    except pg.error as e:
        raise GenError(f"the kiosk window failed: {e}") from None
    finally:
        sys.setswitchinterval(switch)


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
        clock, picture = FrameClock(fps), Picture(pg)
        shown, drawn, dirty = 0, False, False
        while not player.quit:
            for event in pg.event.get():
                if event.type == pg.QUIT:
                    player.press("q")
                elif event.type == pg.KEYDOWN and event.key in keys:
                    player.press(keys[event.key])
                elif event.type in (pg.VIDEORESIZE, pg.WINDOWEXPOSED, pg.WINDOWSIZECHANGED):
                    picture.invalidate()
                    dirty = drawn
            if player.quit:
                break
            new = player.tick()
            if new or dirty:  # scale once per new frame (or after a resize), not once per beat
                picture.draw(player.frame)
                drawn = True
            clock.wait()  # the frame appears on the beat, however long it took to scale
            if new or dirty:
                pg.display.flip()
                dirty = False
            if new:
                shown += 1
                if on_frame is not None:
                    on_frame(player.frame, screen)
                if window.frames and shown >= window.frames:
                    break
    finally:
        pg.display.quit()
    return shown
