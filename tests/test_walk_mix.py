"""Latent walks and the style-mixing grid: the loop closes, keyframes are `gen sample`'s pictures, torch-free CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gen.runtime.bundle import load_bundle
from gen.runtime.errors import GenError
from gen.runtime.latents import seeds_to_z
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.stylegan.mix import mix_grid, mix_styles, parse_styles, style_ranges
from gen.runtime.stylegan.walk import WalkSettings, ease, frame_times, path_at, slerp, walk_frames

SEEDS = [3, 17, 42]


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> BundleGenerator:
    from conftest import MODELS, make_checkpoint
    from gen.export.stylegan import export_stylegan

    folder = tmp_path_factory.mktemp("walk")
    checkpoint = make_checkpoint(folder / "c.safetensors", MODELS["sg2-16"], steps=1)
    bundle, _ = export_stylegan(checkpoint, folder / "bundle")
    return BundleGenerator(load_bundle(bundle.path), "cpu")


def test_slerp_keeps_the_norm_and_hits_its_ends():
    rng = np.random.RandomState(0)
    a, b = rng.randn(2, 512).astype(np.float32)
    t = np.linspace(0, 1, 11)
    path = slerp(np.repeat(a[None], 11, 0), np.repeat(b[None], 11, 0), t)
    assert np.array_equal(path[0], a) and np.allclose(path[-1], b, atol=1e-6)
    norms = np.linalg.norm(path, axis=1)
    assert np.all(norms > 0.95 * min(np.linalg.norm(a), np.linalg.norm(b)))  # no dip towards the centre
    lerp_mid = np.linalg.norm((a + b) / 2)
    assert norms[5] > 1.2 * lerp_mid
    assert np.allclose(slerp(a[None], a[None], 0.3), a[None], atol=1e-6)  # parallel: no division by zero


def test_ease_is_still_at_both_ends():
    assert ease(0.0) == 0.0 and ease(1.0) == 1.0 and ease(0.5) == pytest.approx(0.5)
    h = 1e-4
    assert ease(h) < 1e-6 and 1 - ease(1 - h) < 1e-6


@pytest.mark.parametrize("space", ["z", "w"])
@pytest.mark.parametrize("eased", [True, False])
def test_path_is_a_closed_loop(space, eased):
    keys = seeds_to_z(SEEDS, 32)
    n = 3 * 12
    times = np.append(frame_times(3, n), 3.0)  # and one frame past the end
    path = path_at(keys, times, space, eased)
    assert np.array_equal(path[-1], path[0])  # frame n is frame 0: the video loops
    assert all(np.array_equal(path[12 * i], keys[i]) for i in range(3))
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert steps[-1] > 0 and steps[-1] <= steps.max()  # the wrap is an ordinary step, not a jump or a hold


def test_walk_keyframes_are_the_sampled_pictures_and_the_loop_closes(gen):
    settings = WalkSettings(seconds_per_seed=1.0, fps=6, psi=0.7)
    frames = np.stack(list(walk_frames(gen, SEEDS, settings)))
    assert len(frames) == 18
    sampled = gen.images(SEEDS, psi=0.7, noise_mode="const")
    assert np.abs(frames[::6].astype(int) - sampled).max() <= 1  # (other batch sizes: at most rounding)
    diff = lambda x, y: np.abs(x.astype(int) - y).mean()  # noqa: E731
    steps = [diff(frames[k], frames[k + 1]) for k in range(17)]
    wrap = diff(frames[-1], frames[0])
    assert 0 < wrap <= max(steps)  # the last frame flows into the first


def test_walk_in_w_upscaled(gen):
    settings = WalkSettings(seconds_per_seed=0.5, fps=4, space="w", size=40, psi=0.5)
    frames = list(walk_frames(gen, [1, 2], settings))
    assert len(frames) == 4 and frames[0].shape == (40, 40, 3)


def test_walk_refuses_bad_settings(gen):
    with pytest.raises(GenError, match="at least 2 seeds"):
        list(walk_frames(gen, [5], WalkSettings()))
    with pytest.raises(GenError, match="flicker"):
        WalkSettings(noise_mode="random").check()
    with pytest.raises(GenError, match="z or w"):
        WalkSettings(space="x").check()


def test_style_ranges():
    assert style_ranges(18) == {"coarse": range(0, 4), "middle": range(4, 8), "fine": range(8, 18)}
    assert style_ranges(6) == {"coarse": range(0, 2), "middle": range(2, 4), "fine": range(4, 6)}
    assert parse_styles("1-2", 6) == range(1, 3) and parse_styles("5", 6) == range(5, 6)
    for bad in ("7", "3-1", "x", "0-6"):
        with pytest.raises(GenError):
            parse_styles(bad, 6)


def test_mix_grid_layout_and_styles(gen):
    rows, cols = [1, 2], [3, 4, 5]
    grid = mix_grid(gen, rows, cols, parse_styles("coarse", gen.meta.num_ws), psi=0.7)
    assert grid.shape[:2] == (3, 4) and (grid[0, 0] == 255).all()
    close = lambda x, y: np.abs(x.astype(int) - y).max() <= 1  # noqa: E731
    assert close(grid[0, 1:], gen.images(cols, psi=0.7)) and close(grid[1:, 0], gen.images(rows, psi=0.7))
    cell = grid[1, 2]  # row seed 1 with seed 4's coarse styles: neither source picture
    assert not close(cell, grid[1, 0]) and not close(cell, grid[0, 2])
    everything = mix_grid(gen, rows, cols, range(0, gen.meta.num_ws), psi=0.7)
    assert close(everything[1:, 1:], np.broadcast_to(everything[0:1, 1:], everything[1:, 1:].shape))
    ws = np.zeros((2, 4, 1)), np.ones((3, 4, 1))
    mixed = mix_styles(*ws, range(1, 3))
    assert mixed.shape == (2, 3, 4, 1) and mixed[..., 0].tolist() == [[[0, 1, 1, 0]] * 3] * 2


def test_walk_and_mix_cli_without_torch(gen, tmp_path):
    from conftest import TORCH_BLOCKED

    run = lambda *a: subprocess.run([sys.executable, "-c", TORCH_BLOCKED, *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=120)
    bundle = str(gen.bundle.path)
    gif = tmp_path / "walk.gif"
    p = run("walk", bundle, "--seeds", "3,17", "--seconds", "1", "--fps", "4", "--size", "24", "--out", str(gif))
    assert p.returncode == 0, p.stderr
    import imageio.v3 as iio

    frames = iio.imread(gif, index=None)
    assert frames.shape[:3] == (4, 24, 24)
    mp4 = tmp_path / "walk.mp4"
    p = run("walk", bundle, "--seeds", "3,17", "--seconds", "0.5", "--fps", "4", "--out", str(mp4))
    assert p.returncode == 0 and mp4.stat().st_size > 0, p.stderr
    png = tmp_path / "mix.png"
    p = run("mix", bundle, "--rows", "1,2", "--cols", "3-5", "--styles", "middle", "--out", str(png))
    assert p.returncode == 0 and png.exists(), p.stderr
    p = run("walk", bundle, "--seeds", "3", "--out", str(tmp_path / "w.avi"))
    assert p.returncode == 2 and ".gif or .mp4" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run("mix", bundle, "--styles", "9-12", "--out", str(png))
    assert p.returncode == 2 and "within 0-5" in p.stderr
    assert not Path(tmp_path / "w.avi").exists()
