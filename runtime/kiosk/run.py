"""`gen kiosk` as a library: the frame producer for a bundle, and the kiosk run in a window or a browser.

Scenes (an endless walk, dream zooms) are in scenes.py, the background thread that renders them ahead
and its watchdog in producer.py, the viewer's controls in player.py. Torch-free.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from gen.runtime.dream.feedback import FeedbackSettings
from gen.runtime.errors import GenError
from gen.runtime.images import load_image

from .producer import FrameProducer
from .scenes import DreamScene, WalkScene, fit_long_side, usable_photos
from .settings import KioskSettings


def make_producer(bundle, settings: KioskSettings, pool: Sequence[int], engine: str = "auto") -> FrameProducer:
    """The producer for a loaded bundle: an endless walk (stylegan) or dream zooms of the photos in turn (dream)."""
    settings.check()
    fps = settings.fps
    common = dict(crossfade_frames=round(settings.crossfade * fps), ahead=max(2, round(settings.ahead * fps)),
                  max_failures=settings.max_failures, stall_seconds=settings.watchdog, fps=fps)
    if bundle.manifest.kind == "stylegan":
        from gen.runtime.stylegan.generator import BundleGenerator

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
        from gen.runtime.dream.engine import bundle_gradient

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
