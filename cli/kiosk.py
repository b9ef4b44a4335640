"""`gen kiosk`: read every option, then play a bundle forever in a window, a browser, or as a service."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from gen.runtime.errors import GenError
from gen.runtime.kiosk.display import Window
from gen.runtime.kiosk.serve import Address
from gen.runtime.kiosk.settings import KioskSettings
from gen.runtime.latents import DEFAULT_PSI
from gen.runtime.stylegan.camera import parse_pan
from gen.runtime.stylegan.walk import WalkSettings

from .output import err
from .stylegan import class_option


def _window_size(text: str) -> tuple[int, int]:
    """'960x540' -> (960, 540); Window checks the numbers."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise GenError(f"cannot read window size '{text}'; write WIDTHxHEIGHT, e.g. 960x540") from None
    return w, h


def _default_photos() -> tuple[Path, ...]:
    from gen import models

    shipped = Path(models.__file__).parent / "photos"
    return (shipped,) if shipped.is_dir() else ()


def kiosk(
    bundle: Path = typer.Argument(..., help="A stylegan bundle (an endless latent walk) or a dream bundle "
                                            "(slow dream zooms into photos)."),
    seeds: str = typer.Option("0-99", help="Walk: the seed pool, e.g. '0-99' or '3,17,42'."),
    order: str = typer.Option(KioskSettings.order,
                              help="Walk: random (the next seed drawn from the pool by --seed: endless, never the "
                                   "same twice in a row) or loop (the pool in order, round and round)."),
    speed: float = typer.Option(KioskSettings.speed, help="Seconds per seed (walk) or per dreamed keyframe (dream)."),
    psi: float = typer.Option(WalkSettings.psi, "--psi", "--trunc", show_default=False,
                              help=f"Walk: truncation psi (default: the bundle's, usually {DEFAULT_PSI:g})."),
    space: str = typer.Option(WalkSettings.space, help="Walk: z (slerp between latents) or w (lerp between styles)."),
    crossfade: float = typer.Option(KioskSettings.crossfade,
                                    help="Seconds of crossfade into a new scene (n, or the next photo)."),
    photos: list[Path] = typer.Option(None, "--photo", show_default=False,
                                      help="Dream: a photo or a folder of them, repeatable (default: the shipped "
                                           "photos); each is dreamed for --scene-seconds in turn."),
    size: int = typer.Option(KioskSettings.size,
                             help="Dream: long side of the dreamed picture in pixels (the screen scales it)."),
    zoom: float = typer.Option(KioskSettings.zoom, help="Dream: zoom per keyframe."),
    rotate: float = typer.Option(KioskSettings.rotate, help="Dream: degrees per keyframe, counter-clockwise. "
                                 "StyleGAN3 walk: the camera turns this far and back every 4 seeds (--order loop: "
                                 "every round of the pool); whole turns: round and round."),
    pan: str = typer.Option(None, show_default=False,
                            help="StyleGAN3 walk: the camera drifts out to X,Y picture widths and back, as --rotate."),
    scene_seconds: float = typer.Option(KioskSettings.scene_seconds,
                                        help="Dream: seconds on one photo before the next."),
    max_failures: int = typer.Option(KioskSettings.max_failures,
                                     help="Exit with status 1 (a service restarts the kiosk) after this many failed "
                                          "tries in a row to make frames (engine errors, photos)."),
    watchdog: float = typer.Option(KioskSettings.watchdog,
                                   help="Exit with status 1 after this many seconds without a new frame (a hung "
                                        "engine); 0: never."),
    fps: float = typer.Option(KioskSettings.fps,
                              help="Frames per second shown: 60 suits a 60 Hz screen; on a slow machine 30 "
                                   "(benchmarks/kiosk_speed.py tells whether 60 holds)."),
    engine: str = typer.Option("auto", help="auto | cpu | cuda | ort-trt | trt."),
    display: int = typer.Option(Window.display, help="Which display the fullscreen window goes on (0 = the first)."),
    windowed: bool = typer.Option(Window.windowed, "--windowed", help="A window instead of fullscreen (testing)."),
    window_size: str = typer.Option("x".join(map(str, Window.size)), help="With --windowed: WIDTHxHEIGHT."),
    frames: int = typer.Option(Window.frames,
                               help="Window: quit after showing this many frames (tests, benchmarks); 0: run until q."),
    save_dir: Path = typer.Option(Path("."), help="Where the s key saves the frame shown (kiosk-DATE-TIME.png)."),
    seed: int = typer.Option(KioskSettings.seed, help="Seed of the walk's seed choices and the dream's jitter."),
    serve: bool = typer.Option(False, "--serve", help="Serve a fullscreen web page with the frames instead of "
                                                      "opening a window (no pygame needed)."),
    host: str = typer.Option(Address.host, help="--serve: address to listen on (other than localhost: anyone who "
                                                "can reach it can watch)."),
    port: int = typer.Option(Address.port, help="--serve: port."),
    install_service: bool = typer.Option(False, "--install-service",
                                         help="Write a systemd unit that runs this command (without this option) "
                                              "and restarts it on failure; it is not enabled."),
    unit: Path = typer.Option(None, show_default=False,
                              help="--install-service: the unit file (default ~/.config/systemd/user/"
                                   "gen-kiosk.service)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="--install-service: allow replacing an existing unit "
                                                              "file."),
    class_idx: int = class_option(),
) -> None:
    """Play a bundle forever, fullscreen: an endless latent walk (stylegan) or slow dream zooms (dream).

    Keys: q or Esc quit, space pause, s save the frame, n next scene (new seeds / next photo).
    """
    from gen.runtime.kiosk.run import install_kiosk_service, run_kiosk

    settings = KioskSettings(fps=fps, speed=speed, crossfade=crossfade, seed=seed, order=order,
                             walk=WalkSettings(psi=psi, space=space, class_idx=class_idx, pan=parse_pan(pan),
                                               rotate=rotate),
                             photos=tuple(photos or _default_photos()),
                             size=size, zoom=zoom, rotate=rotate, scene_seconds=scene_seconds,
                             max_failures=max_failures, watchdog=watchdog)
    window = Window(windowed=windowed, display=display, size=_window_size(window_size), frames=frames)
    if install_service:
        path, enable = install_kiosk_service(bundle, seeds, save_dir, unit, sys.argv, serve, overwrite,
                                             settings.walk)
        err.print(escape(f"wrote {path} (not enabled); start it now and at every start-up with:\n  {enable}"))
        return
    screen = Address(host, port) if serve else window
    run_kiosk(bundle, settings, seeds, save_dir, screen, engine, on_serving=_say_serving)


def _say_serving(url: str) -> None:
    err.print(escape(f"serving {url} (Ctrl-C stops); fullscreen: chromium --kiosk --app={url}"))
