"""`gen kiosk`: check every option, then play a bundle forever in a window, a browser, or as a service."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from gen.runtime.errors import GenError

err = Console(stderr=True, soft_wrap=True, highlight=False)


def _window_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise GenError(f"cannot read window size '{text}'; write WIDTHxHEIGHT, e.g. 960x540") from None
    if w < 1 or h < 1:
        raise GenError(f"window size must be positive (got {text})")
    return w, h


def _default_photos() -> tuple[Path, ...]:
    from gen import models

    shipped = Path(models.__file__).parent / "photos"
    return (shipped,) if shipped.is_dir() else ()


def kiosk(
    bundle: Path = typer.Argument(..., help="A stylegan bundle (an endless latent walk) or a dream bundle "
                                            "(slow dream zooms into photos)."),
    seeds: str = typer.Option("0-99", help="Walk: the seed pool, e.g. '0-99' or '3,17,42'."),
    order: str = typer.Option("random", help="Walk: random (the next seed drawn from the pool by --seed: endless, "
                                             "never the same twice in a row) or loop (the pool in order, round "
                                             "and round)."),
    speed: float = typer.Option(4.0, help="Seconds per seed (walk) or per dreamed keyframe (dream)."),
    psi: float = typer.Option(None, "--psi", "--trunc", show_default=False,
                              help="Walk: truncation psi (default: the bundle's, usually 0.7)."),
    space: str = typer.Option("z", help="Walk: z (slerp between latents) or w (lerp between styles)."),
    crossfade: float = typer.Option(1.0, help="Seconds of crossfade into a new scene (n, or the next photo)."),
    photos: list[Path] = typer.Option(None, "--photo", show_default=False,
                                      help="Dream: a photo or a folder of them, repeatable (default: the shipped "
                                           "photos); each is dreamed for --scene-seconds in turn."),
    size: int = typer.Option(384, help="Dream: long side of the dreamed picture in pixels (the screen scales it)."),
    zoom: float = typer.Option(1.03, help="Dream: zoom per keyframe."),
    rotate: float = typer.Option(0.0, help="Dream: degrees per keyframe, counter-clockwise."),
    scene_seconds: float = typer.Option(60.0, help="Dream: seconds on one photo before the next."),
    max_failures: int = typer.Option(10, help="Exit with status 1 (a service restarts the kiosk) after this many "
                                              "failed tries in a row to make frames (engine errors, photos)."),
    watchdog: float = typer.Option(300.0, help="Exit with status 1 after this many seconds without a new frame "
                                               "(a hung engine); 0: never."),
    fps: float = typer.Option(30.0, help="Frames per second shown."),
    engine: str = typer.Option("auto", help="auto | cpu | cuda | ort-trt | trt."),
    display: int = typer.Option(0, help="Which display the fullscreen window goes on (0 = the first)."),
    windowed: bool = typer.Option(False, "--windowed", help="A window instead of fullscreen (testing)."),
    window_size: str = typer.Option("960x540", help="With --windowed: WIDTHxHEIGHT."),
    frames: int = typer.Option(0, help="Window: quit after showing this many frames (tests, benchmarks); "
                                       "0: run until q."),
    save_dir: Path = typer.Option(Path("."), help="Where the s key saves the frame shown (kiosk-DATE-TIME.png)."),
    seed: int = typer.Option(0, help="Seed of the walk's seed choices and the dream's jitter."),
    serve: bool = typer.Option(False, "--serve", help="Serve a fullscreen web page with the frames instead of "
                                                      "opening a window (no pygame needed)."),
    host: str = typer.Option("127.0.0.1", help="--serve: address to listen on (other than localhost: anyone who "
                                               "can reach it can watch)."),
    port: int = typer.Option(8765, help="--serve: port."),
    install_service: bool = typer.Option(False, "--install-service",
                                         help="Write a systemd unit that runs this command (without this option) "
                                              "and restarts it on failure; it is not enabled."),
    unit: Path = typer.Option(None, show_default=False,
                              help="--install-service: the unit file (default ~/.config/systemd/user/"
                                   "gen-kiosk.service)."),
) -> None:
    """Play a bundle forever, fullscreen: an endless latent walk (stylegan) or slow dream zooms (dream).

    Keys: q or Esc quit, space pause, s save the frame, n next scene (new seeds / next photo).
    """
    from gen.runtime.bundle import load_bundle
    from gen.runtime.kiosk.player import Player
    from gen.runtime.kiosk.run import make_producer
    from gen.runtime.kiosk.settings import KioskSettings
    from gen.runtime.stylegan.walk import WalkSettings

    settings = KioskSettings(fps=fps, speed=speed, crossfade=crossfade, seed=seed, order=order,
                             walk=WalkSettings(psi=psi, space=space), photos=tuple(photos or _default_photos()),
                             size=size, zoom=zoom, rotate=rotate, scene_seconds=scene_seconds,
                             max_failures=max_failures, watchdog=watchdog)
    settings = settings.check()
    size_px = _window_size(window_size)
    loaded = load_bundle(bundle)
    pool: list[int] = []
    if loaded.manifest.kind == "stylegan":
        pool = seed_pool(seeds)
    if not save_dir.is_dir():
        raise GenError(f"--save-dir '{save_dir}' is not a folder; create it first")
    if install_service:
        from gen.runtime.kiosk.service import install_service as write_unit

        path, enable = write_unit(unit, sys.argv, serve)
        err.print(escape(f"wrote {path} (not enabled); start it now and at every start-up with:\n  {enable}"))
        return
    if not serve:
        from gen.runtime.kiosk.display import import_pygame

        import_pygame()  # a missing extra is said now, before any thread starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    producer = make_producer(loaded, settings, pool, engine).start()
    player = Player(producer, save_dir)
    try:
        if serve:
            _serve(player, fps, host, port)
        else:
            from gen.runtime.kiosk.display import show

            show(player, fps, windowed=windowed, display=display, window_size=size_px, frames=frames)
    finally:
        producer.stop()


def seed_pool(text: str) -> list[int]:
    """The walk's pool from '0-99' or '3,17,42'; refuses more than MAX_POOL seeds before making the list."""
    from gen.runtime.kiosk.settings import MAX_POOL
    from gen.runtime.latents import parse_seeds

    return parse_seeds(text, limit=MAX_POOL, what="a kiosk's pool of seeds")


def _serve(player, fps: float, host: str, port: int) -> None:
    from gen.runtime.kiosk.serve import FrameServer

    server = FrameServer(player, fps, host, port)
    err.print(escape(f"serving {server.url} (Ctrl-C stops); fullscreen: chromium --kiosk --app={server.url}"))
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
