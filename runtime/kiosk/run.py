"""`gen kiosk` as a library: a bundle played in a window or a browser until stopped, its systemd unit, and
the frame producer for a bundle.

Scenes (an endless walk, dream zooms) are in scenes.py, the background thread that renders them ahead
and its watchdog in producer.py, the viewer's controls in player.py. Torch-free.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from gen.runtime.bundle import Bundle, load_bundle
from gen.runtime.dream.engine import bundle_engine
from gen.runtime.dream.loop import DreamEngine
from gen.runtime.errors import GenError
from gen.runtime.images import load_image
from gen.runtime.latents import class_vector, parse_seeds
from gen.runtime.stylegan.generator import BundleGenerator, check_camera
from gen.runtime.stylegan.walk import WalkSettings

from .display import Window, import_pygame, show
from .player import Player
from .producer import FrameProducer
from .scenes import DreamScene, WalkScene, fit_long_side, usable_photos
from .serve import Address, FrameServer
from .service import install_service
from .settings import MAX_POOL, KioskSettings


def run_kiosk(bundle: Path, settings: KioskSettings, seeds: str, save_dir: Path, screen: Window | Address,
              engine: str = "auto", on_serving: Callable[[str], None] | None = None) -> None:
    """Play `bundle` on `screen` (a window, or a page served at an address) until q or Ctrl-C.

    `seeds` is a stylegan walk's pool ('0-99'); the s key saves into `save_dir`; `on_serving(url)` is told
    where the page is once it is served. Raises KioskFailure (status 1) when the kiosk cannot go on by itself.
    """
    loaded, pool = check_kiosk(bundle, seeds, save_dir, settings.walk)
    if isinstance(screen, Window):
        import_pygame()  # a missing extra is said now, before any thread starts
    # Engine errors, skipped photos and saves are logged to stderr (under systemd: the journal);
    # a no-op where the caller set logging up already.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    producer = make_producer(loaded, settings, pool, engine).start()
    player = Player(producer, save_dir)
    try:
        if isinstance(screen, Window):
            show(player, settings.fps, screen)
        else:
            _serve(player, settings.fps, screen, on_serving)
    finally:
        producer.stop()


def install_kiosk_service(bundle: Path, seeds: str, save_dir: Path, unit: Path | None, argv: list[str],
                          serve: bool, overwrite: bool = False, walk: WalkSettings | None = None) -> tuple[Path, str]:
    """Write a systemd unit that runs the kiosk command line `argv`, checked first as a run would be (an
    existing unit file is replaced only with `overwrite`); returns the unit's path and the command that enables
    it."""
    check_kiosk(bundle, seeds, save_dir, walk or WalkSettings())
    return install_service(unit, argv, serve, overwrite)


def check_kiosk(bundle: Path, seeds: str, save_dir: Path, walk: WalkSettings) -> tuple[Bundle, list[int]]:
    """What a kiosk refuses before it starts (and before its service is installed): the loaded bundle, the walk's
    pool (none for a dream), its class (one for a class-conditional bundle, none otherwise), a camera that moves
    (StyleGAN3 only), a save folder."""
    loaded = load_bundle(bundle)
    pool = seed_pool(seeds) if loaded.manifest.kind == "stylegan" else []
    class_idx = walk.class_idx
    if loaded.manifest.kind == "stylegan":  # said now in one line, not by the frame thread as engine failures
        class_vector(class_idx, loaded.manifest.stylegan.c_dim)
        check_camera(walk.moves_camera, loaded.manifest.stylegan.variant)
    elif class_idx is not None:
        raise GenError(f"--class {class_idx}: a dream bundle's class is chosen at export (gen export-dream --class); "
                       "leave --class out")
    if not save_dir.is_dir():
        raise GenError(f"--save-dir '{save_dir}' is not a folder; create it first")
    return loaded, pool


def seed_pool(text: str) -> list[int]:
    """The walk's pool from '0-99' or '3,17,42'; refuses more than MAX_POOL seeds before making the list."""
    return parse_seeds(text, limit=MAX_POOL, refusal=f"cannot use seeds '{text}' as a kiosk's pool")


def _serve(player: Player, fps: float, address: Address, on_serving: Callable[[str], None] | None) -> None:
    server = FrameServer(player, fps, address)
    if on_serving is not None:
        on_serving(server.url)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a served kiosk is stopped: a clean exit, like q in the window
    finally:
        server.close()


def open_model(bundle: Bundle, engine: str = "auto") -> BundleGenerator | DreamEngine:
    """What the bundle's scenes render with: its generator (stylegan) or its dream gradient (dream); close it."""
    return bundle_engine(bundle, engine) if bundle.manifest.kind == "dream" else BundleGenerator(bundle, engine)


def make_producer(bundle: Bundle, settings: KioskSettings, pool: Sequence[int], engine: str = "auto"
                  ) -> FrameProducer:
    """The producer for a loaded bundle: an endless walk (stylegan) or dream zooms of the photos in turn (dream)."""
    kind = bundle.manifest.kind
    if kind not in ("stylegan", "dream"):
        raise GenError(f"'{bundle.path}' is a {kind} bundle; the kiosk plays stylegan or dream bundles")
    if kind == "stylegan":
        check_camera(settings.walk.moves_camera, bundle.manifest.stylegan.variant)
    new_scene = _walks(settings, pool) if kind == "stylegan" else _dreams(bundle, settings)
    fps = settings.fps
    return FrameProducer(partial(open_model, bundle, engine), new_scene, round(settings.crossfade * fps),
                         ahead=max(2, round(settings.ahead * fps)), max_failures=settings.max_failures,
                         stall_seconds=settings.watchdog, fps=fps)


def _walks(settings: KioskSettings, pool: Sequence[int]) -> Callable[[], WalkScene]:
    """Each call, the next walk through the pool: from its first seed (loop), then from a random one (n)."""
    walk = settings.paced_walk()
    rng = random.Random(settings.seed)
    WalkScene(pool, walk, random.Random(), settings.order)  # refuses a bad pool here, not in the thread
    scenes = 0

    def new_walk() -> WalkScene:
        nonlocal scenes
        scenes += 1  # the first walk of a loop starts at the pool's first seed, like gen walk; n: a random one
        start = pool[0] if settings.order == "loop" and scenes == 1 else pool[rng.randrange(len(pool))]
        return WalkScene(pool, walk, rng, settings.order, start=start)

    return new_walk


def _dreams(bundle: Bundle, settings: KioskSettings) -> Callable[[], DreamScene]:
    """Each call, a dream zoom into the next photo, round and round."""
    min_side = bundle.manifest.dream.min_size
    photos = usable_photos(settings.photos, min_side)  # each decoded once now: bad ones skipped, with a warning
    dream_settings = replace(settings.dream, min_side=min_side, seed=settings.seed)  # (checks the tile against it)
    feedback = settings.paced_feedback()
    turn = -1

    def new_dream() -> DreamScene:
        nonlocal turn
        turn = (turn + 1) % len(photos)  # moves on first: a photo gone bad since is skipped on the retry
        photo = fit_long_side(load_image(photos[turn], min_size=min_side), settings.size, min_side)
        return DreamScene(photo, dream_settings, feedback, tween=round(settings.speed * settings.fps))

    return new_dream
