"""gen kiosk: the producer's walk is gen walk's (and gen sample's at the seeds), the window shows it, keys work,
an engine fault is survived, the served page renders in headless Chromium, the CLI and its systemd unit run."""

from __future__ import annotations

import gc
import http.client
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import weakref
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import (
    MODELS,
    SHIPPED,
    TORCH_BLOCKED,
    assert_same_pictures,
    gen_without_torch,
    make_checkpoint,
    wait_frames,
)
from gen.runtime.bundle import load_bundle
from gen.runtime.dream.feedback import FeedbackSettings, feedback_frames
from gen.runtime.dream.loop import DreamEngine, DreamSettings
from gen.runtime.errors import GenError
from gen.runtime.images import blend, load_image
from gen.runtime.kiosk.display import Window
from gen.runtime.kiosk.player import Player
from gen.runtime.kiosk.producer import FrameProducer, KioskFailure
from gen.runtime.kiosk.run import make_producer
from gen.runtime.kiosk.scenes import DreamScene, WalkScene, fit_long_side
from gen.runtime.kiosk.serve import Address
from gen.runtime.kiosk.settings import KioskSettings
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.stylegan.walk import WalkSettings, walk_frames

SEEDS = [3, 17, 42]
WALK = WalkSettings(psi=0.7, fps=6, seconds_per_seed=1.0)  # 6 frames per seed
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from gen.export.stylegan import export_stylegan

    folder = tmp_path_factory.mktemp("kiosk")
    checkpoint = make_checkpoint(folder / "c.safetensors", MODELS["sg2-16"], steps=0)  # untrained: seeds differ
    made, _ = export_stylegan(checkpoint, folder / "bundle")
    return load_bundle(made.path)


@pytest.fixture(scope="module")
def gen(bundle):
    with BundleGenerator(bundle, "cpu") as opened:
        yield opened


@pytest.fixture(scope="module")
def loop_frames(gen) -> np.ndarray:
    """gen walk's loop through SEEDS, 18 frames."""
    return np.stack(list(walk_frames(gen, SEEDS, WALK)))


@pytest.fixture(scope="module")
def dream_engine():
    """The shipped dream bundle on the CPU."""
    from gen.runtime.dream.engine import bundle_engine

    if not (SHIPPED / "dream-lite0").is_dir():
        pytest.skip("the shipped dream bundle models/dream-lite0 is not here")
    with bundle_engine(SHIPPED / "dream-lite0", "cpu") as engine:
        yield engine


@pytest.fixture
def producers():
    made: list[FrameProducer] = []
    yield made
    for p in made:
        p.stop()


def loop_producer(bundle, producers, **options) -> FrameProducer:
    settings = KioskSettings(fps=6, speed=1.0, order="loop", crossfade=0, walk=WalkSettings(psi=0.7), **options)
    producers.append(make_producer(bundle, settings, SEEDS, "cpu").start())
    return producers[-1]


def loop_scene() -> WalkScene:
    return WalkScene(SEEDS, WALK, random.Random(0), "loop", start=3)


class Faulty:
    """The real runner, except that its runs from number `first` to `last` raise, as an engine's can (a lost
    GPU, a driver reset); closing it closes the runner."""

    def __init__(self, runner, first: int, last: float = float("inf")) -> None:
        self.runner, self.first, self.last, self.calls = runner, first, last, 0
        self.name, self.spec = runner.name, runner.spec

    def run(self, feeds):
        self.calls += 1
        if self.first <= self.calls <= self.last:
            raise RuntimeError("injected engine fault")
        return self.runner.run(feeds)

    def close(self) -> None:
        self.runner.close()


class Noted(BundleGenerator):
    """A generator that notes that it was closed."""

    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


def test_settings_check_themselves_when_made():
    with pytest.raises(GenError, match="unknown order 'x'; choose random or loop"):
        KioskSettings(order="x")
    with pytest.raises(GenError, match="unknown order 'x'; choose random or loop"):
        WalkScene(SEEDS, WALK, random.Random(0), "x")  # the same check
    with pytest.raises(GenError, match="fps and speed must be positive"):
        replace(KioskSettings(), speed=0)  # a changed copy is checked too
    with pytest.raises(GenError, match="zoom must be between 0.5 and 2"):
        KioskSettings(zoom=3.0)  # by the dream zoom made from several fields
    settings = KioskSettings(fps=12, speed=2.0, scene_seconds=30, walk=WalkSettings(psi=0.5))
    assert settings.paced_walk() == WalkSettings(psi=0.5, fps=12, seconds_per_seed=2.0)
    assert settings.paced_feedback() == FeedbackSettings(frames=15, zoom=settings.zoom, fps=12)


def test_loop_is_gen_walk_and_closes(bundle, gen, producers, loop_frames):
    frames = wait_frames(loop_producer(bundle, producers), 2 * 18 + 1)
    # The kiosk renders a leg (6 frames) per batch, gen walk 8 frames and gen sample 3 pictures: other batches
    # sum in other orders, so a value may round one level apart.
    assert_same_pictures(np.stack(frames[:18]), loop_frames)
    assert_same_pictures(np.stack(frames[:18:6]), gen.images(SEEDS, psi=0.7, noise_mode="const"))
    # Round and round, seamless: each lap renders the same legs in the same batches again, so exactly.
    assert all(np.array_equal(frames[k], frames[k + 18]) for k in range(19))


def test_random_walk_never_ends_and_starts_each_leg_at_its_seed(gen):
    pool = list(range(10, 20))

    def walk(rng_seed: int, legs: int = 6) -> tuple[list[int], np.ndarray]:
        scene = WalkScene(pool, WALK, random.Random(rng_seed), "random", start=12)
        visited, frames = [], []
        for _ in range(legs):
            a, b = scene.seeds
            leg = scene.render(gen)  # one batch (8) covers a leg (6 frames), then the scene moves on
            assert len(leg) == 6 and scene.seeds[0] == b and a != b and b in pool
            visited.append(a)
            frames.append(leg)
        return visited, np.concatenate(frames)

    visited, frames = walk(5)
    assert visited[0] == 12
    assert_same_pictures(frames[::6], gen.images(visited, psi=0.7))  # each leg starts at gen sample's (other batches)
    steps = np.abs(np.diff(frames.astype(int), axis=0)).mean(axis=(1, 2, 3))
    joins, within = steps[5::6], np.delete(steps, np.s_[5::6])
    assert steps.min() > 0 and joins.max() <= within.max()  # legs join without a jump or a stall
    assert walk(5)[0] == visited and walk(6)[0] != visited  # the RNG seed decides the walk


def test_window_shows_the_frames_and_keys_work(bundle, producers, loop_frames, tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame = pytest.importorskip("pygame")
    from gen.runtime.kiosk.display import show

    player = Player(loop_producer(bundle, producers), save_dir=tmp_path)
    shown, screens = [], []

    switch = sys.getswitchinterval()
    intervals = []

    def on_frame(frame, screen):
        shown.append(frame.copy())
        screens.append(pygame.surfarray.array3d(screen).transpose(1, 0, 2).copy())
        intervals.append(sys.getswitchinterval())
        if len(shown) == 4:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_s))
        if len(shown) == 10:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_q))

    count = show(player, 60, Window(windowed=True, size=(96, 64)), on_frame=on_frame)
    assert count == len(shown) == 10  # q stopped it
    assert max(intervals) <= 0.001 and sys.getswitchinterval() == switch  # (the display's own, given back after)
    assert_same_pictures(np.stack(shown), loop_frames[:10])  # the walk's frames, in order, none dropped (other batches)
    assert all(not np.array_equal(shown[k], shown[k + 1]) for k in range(9))
    for frame, screen in zip(shown, screens):  # 16x16 scaled with smoothing into the middle 64x64, black bars
        assert screen.shape == (64, 96, 3) and screen[:, :16].max() == 0 and screen[:, 80:].max() == 0
        picture = screen[:, 16:80].astype(int)
        smooth = pygame.transform.smoothscale(pygame.image.frombuffer(frame.tobytes(), (16, 16), "RGB"), (64, 64))
        assert np.array_equal(picture, pygame.surfarray.array3d(smooth).transpose(1, 0, 2))  # (the same scaling)
        blocky = frame.repeat(4, axis=0).repeat(4, axis=1)
        assert np.abs(picture - blocky).mean() > 5  # smoothed, not blown-up pixels
        means = picture.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
        assert np.corrcoef(means.ravel(), frame.ravel())[0, 1] > 0.8  # upright, not mirrored or transposed
        assert np.corrcoef(means.ravel(), frame.transpose(1, 0, 2).ravel())[0, 1] < 0.6
    saved = list(tmp_path.glob("kiosk-*.png"))
    assert len(saved) == 1 and np.array_equal(load_image(saved[0]), shown[3])  # s saved the frame on screen


class FakeTime:
    """perf_counter and sleep on a clock that moves only when slept on or told to (`pass_`)."""

    def __init__(self) -> None:
        self.now, self.slept = 100.0, []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(seconds, 1e-4)  # (sleep(0) yields: some time passes)

    def pass_(self, seconds: float) -> None:
        self.now += seconds


def test_frame_clock_keeps_a_steady_beat_and_starts_afresh_when_far_behind(monkeypatch):
    from gen.runtime.kiosk import display

    fake = FakeTime()
    monkeypatch.setattr(display, "time", fake)
    clock, period = display.FrameClock(60), 1 / 60
    clock.wait()  # the first frame at once
    start, beats = fake.now, []
    for work in [0.002, 0.010, 0.015, 0.001, 0.012]:  # the loop's own work varies: the beat does not
        fake.pass_(work)
        clock.wait()
        beats.append(fake.now - start)
    assert np.allclose(beats, np.arange(1, 6) * period, atol=2e-4)  # on the grid: 60.0 fps, not 62.5
    assert all(s <= period for s in fake.slept) and any(s > 0.001 for s in fake.slept)  # slept, then yielded
    fake.pass_(period + 0.005)  # one slow frame: shown 5 ms late, the next back on the grid
    clock.wait()
    late = fake.now
    fake.pass_(0.001)
    clock.wait()
    assert np.isclose(late - start, 6 * period + 0.005) and np.isclose(fake.now - start, 7 * period, atol=2e-4)
    fake.pass_(0.5)  # a stall of many beats: no burst of frames to catch up, a new grid from now
    clock.wait()
    resumed = fake.now
    fake.pass_(0.001)
    clock.wait()
    assert np.isclose(fake.now - resumed, period, atol=2e-4)


def test_picture_letterboxes_any_shape_and_follows_the_screen(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame = pytest.importorskip("pygame")
    from gen.runtime.kiosk.display import Picture

    def smooth(frame, size):
        surface = pygame.image.frombuffer(np.ascontiguousarray(frame).tobytes(), frame.shape[1::-1], "RGB")
        return pygame.surfarray.array3d(pygame.transform.smoothscale(surface, size)).transpose(1, 0, 2)

    rng = np.random.default_rng(0)
    square = rng.integers(1, 255, (16, 16, 3), dtype=np.uint8)  # (no black pixel: bars are told apart)
    wide = rng.integers(1, 255, (8, 32, 3), dtype=np.uint8)
    pygame.display.init()
    try:
        pygame.display.set_mode((96, 64))
        picture = Picture(pygame)
        for frame, (x, y, w, h) in [(square, (16, 0, 64, 64)), (wide, (0, 20, 96, 24)), (square, (16, 0, 64, 64))]:
            picture.draw(frame)  # a new shape (the next photo of a dream): new bars, the old picture's edges gone
            screen = pygame.surfarray.array3d(pygame.display.get_surface()).transpose(1, 0, 2)
            assert np.array_equal(screen[y:y + h, x:x + w], smooth(frame, (w, h)))
            bars = np.ones(screen.shape[:2], bool)
            bars[y:y + h, x:x + w] = False
            assert screen[bars].max() == 0 and screen[~bars].min() > 0
        pygame.display.set_mode((64, 96))  # the window resized (or another screen): laid out again
        picture.invalidate()
        picture.draw(square)
        screen = pygame.surfarray.array3d(pygame.display.get_surface()).transpose(1, 0, 2)
        assert screen.shape == (96, 64, 3) and np.array_equal(screen[16:80], smooth(square, (64, 64)))
        assert screen[:16].max() == 0 and screen[80:].max() == 0
    finally:
        pygame.display.quit()


def test_pause_and_next_scene_crossfade(bundle, gen, producers):
    settings = KioskSettings(fps=6, speed=1.0, crossfade=0.5, seed=1, walk=WalkSettings(psi=0.7))  # 3 fade frames
    producer = make_producer(bundle, settings, list(range(100)), "cpu").start()
    producers.append(producer)
    player = Player(producer)
    wait_frames(producer, 4)
    before = player.frame
    player.press("space")
    for _ in range(20):
        player.tick()
        time.sleep(0.02)
    assert producer.queue.full() and player.frame is before  # paused: frames are ready, none is taken
    first_scene = producer.scene
    player.press("n")
    player.press("space")
    fresh = wait_frames(producer, 4)
    start = producer.scene.start
    assert producer.scene is not first_scene
    picture = gen.images([start], psi=0.7)[0]
    assert_same_pictures(fresh[0], blend(before, picture, 1 / 4))  # the crossfade starts from the frame on screen
    weights = [np.abs(f.astype(int) - before).mean() for f in fresh]
    assert weights[0] < weights[1] < weights[2]


def test_engine_fault_is_logged_and_the_engine_closed_and_reopened(bundle, producers, loop_frames, caplog):
    opened: list[Noted] = []

    def open_model() -> Noted:
        gen = Noted(bundle, "cpu")
        if not opened:
            gen.synthesis = Faulty(gen.synthesis, 2, 2)  # the second leg fails once
        opened.append(gen)
        return gen

    producer = FrameProducer(open_model, loop_scene, retry_min=0.01)
    producers.append(producer.start())
    frames = wait_frames(producer, 30)
    assert producer.errors == 1 and producer.opened == 2 and "injected engine fault" in caplog.text
    assert opened[0].closed and not opened[1].closed  # the failed engine was closed before another was opened
    # It carried on from the same frame; after the fault, in other batches than gen walk's.
    assert_same_pictures(np.stack(frames), loop_frames[np.arange(30) % 18])
    producer.stop()
    assert opened[1].closed  # and the thread closed its engine as it stopped


def test_a_finished_dream_scene_is_freed_without_the_collector(dream_engine):
    """A scene in the middle of its loop is freed when dropped, by reference counting alone: a kiosk runs scene
    after scene, and a cycle kept each until a full collection (which stalls the display when it comes)."""
    photo = fit_long_side(load_image(SHIPPED / "photos" / "chelsea.jpg"), 64, dream_engine.min_side)
    scene = DreamScene(photo, DreamSettings(octaves=1, iterations=1, min_side=dream_engine.min_side),
                       FeedbackSettings(frames=3, zoom=1.1), tween=2)
    scene.render(dream_engine)
    gone = weakref.ref(scene)
    gc.disable()
    try:
        del scene
        assert gone() is None
    finally:
        gc.enable()


def test_dream_zoom_frames_and_fault(dream_engine, producers, caplog):
    photo = fit_long_side(load_image(SHIPPED / "photos" / "chelsea.jpg"), 64, dream_engine.min_side)
    settings = DreamSettings(octaves=1, iterations=2, min_side=dream_engine.min_side)
    feedback = FeedbackSettings(frames=3, zoom=1.1)
    scene = DreamScene(photo, settings, feedback, tween=4)
    frames = np.concatenate([scene.render(dream_engine), scene.render(dream_engine)])
    keys = list(feedback_frames(photo, dream_engine.gradient, settings, feedback))
    assert scene.done and len(frames) == 8
    # Keyframes are gen dream --frames' frames: the same runner on the same pictures, so exactly.
    assert np.array_equal(frames[0], keys[0]) and np.array_equal(frames[4], keys[1])
    jump = np.abs(keys[1].astype(int) - keys[0]).mean()
    steps = np.abs(np.diff(frames[:5].astype(int), axis=0)).mean(axis=(1, 2, 3))
    assert steps.max() < 0.6 * jump  # in-between frames split the jump into smaller moves

    opened = []

    def open_flaky() -> DreamEngine:
        first, runs = not opened, []

        def flaky(image):
            runs.append(1)
            if first and len(runs) == 3:  # the first engine's third run fails
                raise RuntimeError("injected engine fault")
            return dream_engine.gradient(image)

        opened.append(flaky)
        return DreamEngine(flaky, dream_engine.min_side, "flaky")  # (closing it leaves the shared engine open)

    producer = FrameProducer(open_flaky, lambda: DreamScene(photo, settings, FeedbackSettings(frames=1000, zoom=1.1),
                                                            tween=2), retry_min=0.01)
    producers.append(producer.start())
    frames = wait_frames(producer, 12)
    assert producer.errors == 1 and len(opened) == 2 and "injected engine fault" in caplog.text
    assert all(f.shape == photo.shape for f in frames) and not np.array_equal(frames[0], frames[-1])


def test_served_page_renders_in_headless_chromium(bundle, producers, loop_frames, tmp_path):
    from gen.runtime.kiosk.serve import FrameServer

    if CHROMIUM is None:
        if os.environ.get("GEN_REQUIRE_CHROMIUM") == "1":  # (.ci/run sets it: there, a missing browser is a failure)
            pytest.fail("chromium is not installed but GEN_REQUIRE_CHROMIUM=1: install Debian's chromium")
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")

    server = FrameServer(Player(loop_producer(bundle, producers)), 6, Address(port=0))
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        with urllib.request.urlopen(server.url, timeout=10) as r:
            assert "frame.jpg" in r.read().decode()
        with urllib.request.urlopen(server.url + "frame.jpg", timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
            served = np.asarray(Image.open(r).convert("RGB")).astype(int)
        assert min(np.abs(served - f).mean() for f in loop_frames) < 12  # a frame of the walk (JPEG-coded)

        def request(key: str):
            return urllib.request.urlopen(urllib.request.Request(server.url + f"key/{key}", method="POST"),
                                          timeout=10)

        assert request("space").status == 204 and server.player.paused
        assert request("space").status == 204 and not server.player.paused
        with pytest.raises(urllib.error.HTTPError, match="404"):
            request("q")  # a visitor cannot stop the kiosk
        shot = tmp_path / "shot.png"
        p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                            "--window-size=320,240", server.url], capture_output=True, text=True, timeout=60)
        assert shot.exists(), p.stderr[-2000:]
    finally:
        server.close()
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (240, 320, 3) and pixels.std() > 20  # not blank
    assert pixels[:, :30].max() < 16 and pixels[:, 290:].max() < 16  # black bars: the picture is contained
    picture = pixels[:, 40:280].reshape(16, 15, 16, 15, 3).mean(axis=(1, 3))  # back to 16x16
    likeness = max(np.corrcoef(picture.ravel(), f.ravel())[0, 1] for f in loop_frames)
    assert likeness > 0.8  # and it is a frame of the walk, enlarged with smoothing


def test_serving_beyond_localhost_warns(bundle, producers):
    from gen.runtime.errors import GenWarning
    from gen.runtime.kiosk.serve import FrameServer

    with pytest.warns(GenWarning, match="anyone who can reach"):
        FrameServer(Player(loop_producer(bundle, producers)), 30, Address("0.0.0.0", 0)).close()


def test_cli_window_service_unit_and_missing_extra(bundle, tmp_path, monkeypatch):
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    args = ["kiosk", str(bundle.path), "--windowed", "--frames", "5", "--fps", "60", "--seeds", "1-9", "--engine",
            "cpu", "--save-dir", str(tmp_path)]
    p = gen_without_torch(*args)
    assert p.returncode == 0, p.stderr

    unit = tmp_path / "gen kiosk.service"  # a space, to check the quoting
    p = gen_without_torch(*args, "--install-service", "--unit", str(unit), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "systemctl --user daemon-reload && systemctl --user enable --now" in p.stderr and "not enabled" in p.stderr
    text = unit.read_text()
    assert "Restart=on-failure" in text and f"enable --now {shlex.quote(str(unit))}" in text
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    command = shlex.split(exec_start.removeprefix("ExecStart="))
    assert command[:4] == [sys.executable, "-m", "gen.cli", "kiosk"] and command[4:] == args[1:]
    p = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)  # the unit's command runs
    assert p.returncode == 0, p.stderr

    no_pygame = TORCH_BLOCKED.replace("'onnxscript')", "'onnxscript', 'pygame')")  # a runtime without the kiosk extra
    assert no_pygame != TORCH_BLOCKED
    p = subprocess.run([sys.executable, "-c", no_pygame, *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "pip install 'gen[kiosk]'" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = gen_without_torch("kiosk", str(bundle.path), "--seeds", "5", "--windowed")
    assert p.returncode == 2 and "at least 2 different seeds" in p.stderr


def test_cli_serve_says_where_and_stops_on_ctrl_c(bundle, tmp_path):
    p = subprocess.Popen([sys.executable, "-c", TORCH_BLOCKED, "kiosk", str(bundle.path), "--serve", "--port", "0",
                          "--seeds", "1-9", "--engine", "cpu"], stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         # as from a terminal: a shell's background job (`.ci/run &`) starts its children with
                         # SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    logged: list[str] = []
    try:
        line = p.stderr.readline()
        while line and not line.startswith("serving "):  # (log lines may come first)
            logged.append(line)
            line = p.stderr.readline()
        # Read the rest as it comes, so a full pipe never blocks the kiosk's logging.
        threading.Thread(target=lambda: logged.extend(p.stderr), daemon=True).start()
        url = line.split()[1]
        assert url.startswith("http://127.0.0.1:") and f"fullscreen: chromium --kiosk --app={url}" in line, line
        # A page that stays connected (keep-alive) must not hold up the stop.
        page = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=30)
        page.request("GET", "/frame.jpg")
        response = page.getresponse()
        assert response.status == 200 and response.read()[:2] == b"\xff\xd8"
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 0, "".join(logged)  # Ctrl-C is the served kiosk's q
        page.close()
    finally:
        p.kill()


def smooth_picture(h: int = 72, w: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    return (np.stack([np.sin(7 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(4 * (x + y))], -1) * 110 + 128
            ).astype(np.uint8)


@pytest.mark.parametrize("zoom", [1.03, 1.5, 0.97, 0.8])
def test_zoom_without_a_turn_is_the_turned_zoom_at_no_angle(zoom):
    from gen.runtime.dream.feedback import zoom_rotate

    picture = smooth_picture()
    crop = zoom_rotate(picture, zoom, 0.0)  # a crop, resized
    affine = zoom_rotate(picture, zoom, 1e-9)  # the general affine path, mirrored borders, turned by ~nothing
    assert crop.shape == affine.shape == picture.shape
    assert np.abs(crop.astype(int) - affine).max() <= 3  # the same view: same centre, same scale, same borders
    assert np.abs(crop.astype(int) - picture).mean() > 2  # (and a view that moved)


def test_dream_segments_come_a_few_frames_at_a_time(dream_engine):
    photo = fit_long_side(load_image(SHIPPED / "photos" / "chelsea.jpg"), 48, dream_engine.min_side)
    settings = DreamSettings(octaves=1, iterations=1, min_side=dream_engine.min_side)
    feedback = FeedbackSettings(frames=3, zoom=1.1)
    whole = DreamScene(photo, settings, feedback, tween=10, batch=10)
    chunked = DreamScene(photo, settings, feedback, tween=10, batch=4)
    expected = np.concatenate([whole.render(dream_engine) for _ in range(2)])
    sizes, got = [], []
    while not chunked.done:
        got.append(chunked.render(dream_engine))
        sizes.append(len(got[-1]))
    assert sizes == [4, 4, 2, 4, 4, 2] and whole.done  # 2 segments of 10 frames, 4 at a time
    # The same frames as all at once, exactly: the same runner dreams the same keyframes, and each frame in
    # between is made on its own (a batch here is a list of frames, not an engine batch).
    assert np.array_equal(np.concatenate(got), expected)


def test_make_producer_dreams_the_photos_and_skips_a_bad_one(dream_engine, tmp_path, producers, caplog):
    dream_bundle = load_bundle(SHIPPED / "dream-lite0")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SHIPPED / "photos" / "chelsea.jpg", photos / "a.jpg")
    (photos / "b.jpg").write_bytes(b"not a picture")  # skipped at start-up, with a warning
    dream = DreamSettings(octaves=1, iterations=1)
    settings = KioskSettings(fps=4, speed=1.0, crossfade=0, photos=(photos,), size=48, scene_seconds=2, dream=dream)
    producer = make_producer(dream_bundle, settings, [], "cpu").start()
    producers.append(producer)
    frames = wait_frames(producer, 6)
    assert "skipping 1 photo" in caplog.text and "b.jpg" in caplog.text
    min_side = dream_engine.min_side
    photo = fit_long_side(load_image(photos / "a.jpg"), 48, min_side)
    first = next(feedback_frames(photo, dream_engine.gradient, replace(dream, min_side=min_side, seed=0),
                                 FeedbackSettings(frames=2, zoom=1.03)))
    # gen dream --frames' first keyframe of the photo; the kiosk's own runner of the graph, in another thread.
    assert_same_pictures(frames[0], first)
    assert all(f.shape == photo.shape for f in frames) and not np.array_equal(frames[1], frames[0])
    assert producer.errors == producer.scene_errors == 0

    (photos / "a.jpg").write_bytes(b"gone bad")
    with pytest.raises(GenError, match="none of the 2 photo"):
        make_producer(dream_bundle, settings, [], "cpu")


def test_a_persistent_engine_fault_stops_the_window_with_status_1(bundle, producers, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame = pytest.importorskip("pygame")
    from gen.runtime.kiosk.display import show

    opened: list[Noted] = []

    def open_model() -> Noted:
        opened.append(Noted(bundle, "cpu"))
        opened[-1].synthesis = Faulty(opened[-1].synthesis, 1)  # an engine that is gone: every run fails
        return opened[-1]

    producer = FrameProducer(open_model, loop_scene, retry_min=0.01, max_failures=4)
    producers.append(producer.start())
    start = time.monotonic()
    give_up = threading.Timer(30, lambda: pygame.event.post(pygame.event.Event(pygame.QUIT)))  # (fail, not hang)
    give_up.start()
    with pytest.raises(KioskFailure) as failure:
        show(Player(producer), 60, Window(windowed=True, size=(32, 32)))
    give_up.cancel()
    assert time.monotonic() - start < 30 and producer.errors == producer.opened == 4
    message = str(failure.value)
    assert "injected engine fault" in message and "4 failures in a row" in message and "\n" not in message
    assert failure.value.status == 1
    producer.stop()
    assert all(gen.closed for gen in opened)  # each failed engine closed, the last as the thread gave up


class Dies(BaseException):
    """Not an Exception: what no handler in the producer's loop expects."""


def test_watchdog_sees_a_dead_or_stalled_producer(bundle, producers):
    class Scene:
        done = False

        def __init__(self, action) -> None:
            self.action = action

        def render(self, model):
            self.action()
            return loop_scene().render(model)

    def die():
        raise Dies("out of the blue")

    hang = threading.Event()
    open_gen = partial(BundleGenerator, bundle, "cpu")  # one each: a producer closes its engine when it ends
    dead = FrameProducer(open_gen, lambda: Scene(die)).start()
    stalled = FrameProducer(open_gen, lambda: Scene(lambda: hang.wait(30)), stall_seconds=0.5).start()
    healthy = FrameProducer(open_gen, lambda: Scene(lambda: None), stall_seconds=0.5, ahead=2).start()
    producers.extend([dead, stalled, healthy])
    try:
        time.sleep(1.5)  # (healthy: its queue full and nobody taking frames, like a paused kiosk)
        with pytest.raises(KioskFailure, match="stopped: Dies: out of the blue"):
            dead.check()
        with pytest.raises(KioskFailure, match="no new frame for"):
            stalled.check()
        healthy.check()
        assert healthy.queue.full()
    finally:
        hang.set()


def test_s_key_survives_a_failed_save_and_is_rate_limited(bundle, producers, tmp_path, caplog):
    producer = loop_producer(bundle, producers)
    wait_frames(producer, 2)
    player = Player(producer, save_dir=tmp_path / "gone", save_every=0.5)
    assert player.press("s") is None and "cannot save the frame" in caplog.text  # logged; the kiosk goes on
    time.sleep(0.6)
    player.save_dir = tmp_path
    first = player.press("s")
    assert first is not None and first.exists()
    assert player.press("s") is None  # a second s within save_every: ignored
    time.sleep(0.6)
    assert player.press("s") is not None and len(list(tmp_path.glob("kiosk-*.png"))) == 2


def test_server_keeps_alive_encodes_only_when_watched_and_refuses_other_sites(bundle, producers):
    import http.client

    from gen.runtime.kiosk.serve import FrameServer

    server = FrameServer(Player(loop_producer(bundle, producers)), 30, Address(port=0), idle_after=1.0)
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        time.sleep(0.5)
        assert server.frames == server.encoded == 0  # nobody watching: no frame taken, none encoded
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(3):
            conn.request("GET", "/frame.jpg")
            r = conn.getresponse()
            assert r.status == 200 and r.read()[:2] == b"\xff\xd8" and r.version == 11 and not r.will_close
        sock = conn.sock
        own = f"127.0.0.1:{server.port}"

        def post(key: str, **headers) -> int:
            conn.request("POST", f"/key/{key}", body=b"", headers=headers)
            r = conn.getresponse()
            r.read()
            return r.status

        assert post("space", Origin="http://evil.example") == 403 and not server.player.paused  # another site
        assert post("space", Host=f"evil.example:{server.port}") == 403  # DNS rebinding: a name not ours
        assert post("space", Host=f"localhost:{server.port + 1}") == 403
        assert post("space", Origin=f"http://{own}") == 204 and server.player.paused  # the page itself
        assert post("space") == 204 and not server.player.paused  # no Origin: not a browser's cross-site POST
        assert post("q", Origin=f"http://{own}") == 404 and not server.player.quit
        assert conn.sock is sock  # one connection throughout: kept alive
        conn.close()
        assert 1 <= server.encoded <= server.frames
        time.sleep(1.5)
        taken = server.frames
        time.sleep(0.5)
        assert server.frames == taken  # the page went away: the walk waits
    finally:
        server.close()


def test_cli_failures_are_one_line_errors(bundle, tmp_path):
    pytest.importorskip("pygame")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return gen_without_torch("kiosk", str(bundle.path), *args, env=env, cwd=tmp_path)

    def error(p) -> str:
        lines = p.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
        return lines[-1]

    p = run("--windowed", "--frames", "3", "--engine", "cpu")  # no display: not a black screen that looks fine
    assert p.returncode == 2 and "no display" in error(p) and "--serve" in error(p)
    p = run("--install-service", "--unit", "/proc/gen-kiosk.service")  # a folder no one can write in
    assert p.returncode == 2 and "sudo" in error(p) and not Path("/proc/gen-kiosk.service").exists()
    start = time.monotonic()
    p = run("--seeds", "0-99999999", "--windowed")
    assert p.returncode == 2 and "at most 1,000,000" in error(p) and time.monotonic() - start < 60

    broken = TORCH_BLOCKED.replace("from gen.cli import main", """import onnxruntime as ort
def run(self, *args, **kwargs):
    raise RuntimeError("injected engine fault")
ort.InferenceSession.run = run
from gen.cli import main""")
    assert broken != TORCH_BLOCKED
    p = subprocess.run([sys.executable, "-c", broken, "kiosk", str(bundle.path), "--windowed", "--engine", "cpu",
                        "--max-failures", "2"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**env, "SDL_VIDEODRIVER": "dummy"})
    assert p.returncode == 1 and "2 failures in a row" in error(p)  # systemd's Restart=on-failure takes over


def test_queue_grows_to_hold_a_slow_render(bundle, producers):
    class Slow:  # a dream keyframe: one render that takes longer than the queue's frames last on screen
        done = False

        def __init__(self) -> None:
            self.walk = loop_scene()

        def render(self, model):
            time.sleep(0.4)
            return self.walk.render(model)

    open_gen = partial(BundleGenerator, bundle, "cpu")
    grows = FrameProducer(open_gen, Slow, ahead=10, fps=30).start()  # 10 frames: 1/3 s at 30 fps
    fixed = FrameProducer(open_gen, Slow, ahead=10).start()
    producers.extend([grows, fixed])
    wait_frames(grows, 1)
    wait_frames(fixed, 1)
    assert 18 <= grows.queue.maxsize <= 30 and fixed.queue.maxsize == 10  # 1.5 x 0.4 s x 30 fps, not more


class StillProducer:
    """One grey frame, always ready: the served page's HTTP side without a walk being rendered."""

    shown = np.full((16, 16, 3), 128, np.uint8)

    def check(self) -> None:
        pass

    def get(self) -> np.ndarray:
        return self.shown

    def next_scene(self) -> None:
        pass


@pytest.fixture
def still_server(monkeypatch):
    from gen.runtime.kiosk import serve

    monkeypatch.setattr(serve, "CONNECTION_TIMEOUT", 1.0)
    server = serve.FrameServer(Player(StillProducer()), 30, Address(port=0))
    threading.Thread(target=server.serve, daemon=True).start()
    yield server
    server.close()


def raw_request(port: int, head: str, timeout: float = 5.0) -> tuple[int, bool]:
    """Send a request's line and headers (and no body) on a new socket: (the response's status, whether the
    server then closed the connection)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"the server closed the connection without answering: {data!r}"
            data += chunk
        headers, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", headers).group(1))
        while len(rest) < length:
            rest += s.recv(65536)
        try:
            closed = s.recv(1) == b""  # the timeout is 5 s, the server's 1 s: a kept-alive connection ends too
        except TimeoutError:
            closed = False
        return int(headers.split(b" ", 2)[1]), closed


def test_a_huge_or_bad_content_length_is_refused_unread_and_the_server_goes_on(still_server):
    """Issue 12, item 18: the body was read before the Origin check, so Content-Length: 10**12 was a MemoryError."""
    port = still_server.port
    own = f"127.0.0.1:{port}"

    def post(*headers: str, path: str = "/key/space") -> tuple[int, bool]:
        start = time.monotonic()
        answer = raw_request(port, f"POST {path} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n")
        assert time.monotonic() - start < 4  # answered at once (and closed within the 1 s timeout at most)
        return answer

    huge = "Content-Length: 1000000000000"
    assert post(f"Host: {own}", "Origin: http://evil.example", huge) == (403, True)
    assert post(f"Host: evil.example:{port}", huge) == (403, True)
    assert post(f"Host: {own}", huge, path="/key/q") == (404, True)
    assert post(f"Host: {own}", f"Origin: http://{own}", huge) == (413, True)
    assert post(f"Host: {own}", "Content-Length: " + "9" * 400) == (400, True)
    for bad in ("-5", "1e3", "0x10", "\u00b2", "5, 5"):
        assert post(f"Host: {own}", f"Content-Length: {bad}") == (400, True), bad
    assert post(f"Host: {own}", "Content-Length: 0", "Content-Length: 7") == (400, True)
    assert post(f"Host: {own}", "Transfer-Encoding: chunked") == (411, True)
    assert not still_server.player.paused  # no key was pressed by any of them
    start = time.monotonic()
    assert raw_request(port, f"GET / HTTP/1.1\r\nHost: {own}\r\n{huge}\r\n\r\n") == (200, True)
    assert time.monotonic() - start < 1  # a GET's announced body is not read either: answered, then closed

    # The server goes on, and a small body is read and dropped on a kept-alive connection.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/frame.jpg")
    r = conn.getresponse()
    assert r.status == 200 and r.read()[:2] == b"\xff\xd8"
    conn.request("POST", "/key/space", body=b"x" * 1024, headers={"Origin": f"http://{own}"})
    r = conn.getresponse()
    assert r.status == 204 and not r.will_close and r.read() == b"" and still_server.player.paused
    conn.close()


def test_an_idle_connection_is_closed_after_the_timeout(still_server):
    """Issue 12, item 18: with no timeout, each client that connected and sent nothing held a thread forever."""
    import socket

    with socket.create_connection(("127.0.0.1", still_server.port), timeout=10) as idle, \
            socket.create_connection(("127.0.0.1", still_server.port), timeout=10) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\n")  # a request line, then nothing
        start = time.monotonic()
        assert idle.recv(1) == b"" and slow.recv(1) == b""  # closed by the server, with nothing said
        assert 0.5 < time.monotonic() - start < 5
    # A page's kept-alive connection that keeps asking is never idle that long: it is served throughout.
    conn = http.client.HTTPConnection("127.0.0.1", still_server.port, timeout=10)
    for _ in range(4):
        conn.request("GET", "/frame.jpg")
        r = conn.getresponse()
        assert r.status == 200 and r.read()[:2] == b"\xff\xd8"
        sock = conn.sock
        time.sleep(0.5)
    assert conn.sock is sock
    conn.close()
