"""Latent walks and the style-mixing grid: the loop closes, keyframes are `gen sample`'s pictures, torch-free CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_same_pictures, gen_without_torch
from gen.runtime.bundle import load_bundle
from gen.runtime.errors import GenError
from gen.runtime.latents import seeds_to_z
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.stylegan.mix import mix_grid, mix_styles, mix_to_file, parse_styles, style_ranges
from gen.runtime.stylegan.walk import WalkSettings, ease, frame_times, path_at, slerp, walk_frames

SEEDS = [3, 17, 42]


@pytest.fixture(scope="module")
def gen(sg2_16_export):
    """The session's sg2-16 bundle (conftest.sg2_16_export), opened."""
    _, bundle, _ = sg2_16_export
    with BundleGenerator(load_bundle(bundle.path), "cpu") as opened:
        yield opened


def mean_step(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b).mean())


def far(a: np.ndarray, b: np.ndarray) -> bool:
    """Other pictures, not the same one up to rounding."""
    return int(np.abs(a.astype(int) - b).max()) > 1


def test_slerp_keeps_the_norm_and_hits_its_ends():
    rng = np.random.RandomState(0)
    a, b = rng.randn(2, 512).astype(np.float32)
    t = np.linspace(0, 1, 11)
    path = slerp(np.repeat(a[None], 11, 0), np.repeat(b[None], 11, 0), t)
    assert np.array_equal(path[0], a) and np.allclose(path[-1], b, atol=1e-6)  # (at t=0, a's weight is x/x: 1)
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
    # Exactly, on any CPU: frame n is frame 0 computed again (the video loops), and at a whole time the
    # weights are exactly 1 and 0, so the latent is the key itself.
    assert np.array_equal(path[-1], path[0])
    assert all(np.array_equal(path[12 * i], keys[i]) for i in range(3))
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert steps[-1] > 0 and steps[-1] <= steps.max()  # the wrap is an ordinary step, not a jump or a hold


def test_walk_keyframes_are_the_sampled_pictures_and_the_loop_closes(gen):
    settings = WalkSettings(seconds_per_seed=1.0, fps=6, psi=0.7)
    frames = np.stack(list(walk_frames(gen, SEEDS, settings)))
    assert len(frames) == 18
    sampled = gen.images(SEEDS, psi=0.7, noise_mode="const")
    assert_same_pictures(frames[::6], sampled)  # (a walk's batch of 8 frames, gen sample's of 3: rounding apart)
    steps = [mean_step(frames[k], frames[k + 1]) for k in range(17)]
    wrap = mean_step(frames[-1], frames[0])
    assert 0 < wrap <= max(steps)  # the last frame flows into the first


def test_walk_in_w_upscaled(gen):
    settings = WalkSettings(seconds_per_seed=0.5, fps=4, space="w", size=40, psi=0.5)
    frames = list(walk_frames(gen, [1, 2], settings))
    assert len(frames) == 4 and frames[0].shape == (40, 40, 3)


def test_walk_and_mix_refuse_bad_settings(gen, tmp_path):
    with pytest.raises(GenError, match="at least 2 seeds"):
        list(walk_frames(gen, [5], WalkSettings()))
    with pytest.raises(GenError, match="flicker"):
        WalkSettings(noise_mode="random")
    with pytest.raises(GenError, match="z or w"):
        WalkSettings(space="x")
    for size in (4, 5000):  # one size check for walks and mixing grids
        with pytest.raises(GenError, match=f"between 8 and 4096 pixels \\(got {size}\\)"):
            WalkSettings(size=size)
        with pytest.raises(GenError, match=f"between 8 and 4096 pixels \\(got {size}\\)"):
            mix_to_file(gen.bundle.path, tmp_path / "mix.png", "1", "2", size=size)
    with pytest.raises(GenError, match="fps must be positive"):
        replace(WalkSettings(), fps=0)  # a changed copy is checked too


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
    # The grid draws its pictures in batches of 8 of all its styles, gen sample in its own: rounding apart.
    assert_same_pictures(grid[0, 1:], gen.images(cols, psi=0.7))
    assert_same_pictures(grid[1:, 0], gen.images(rows, psi=0.7))
    cell = grid[1, 2]  # row seed 1 with seed 4's coarse styles: neither source picture
    assert far(cell, grid[1, 0]) and far(cell, grid[0, 2])
    everything = mix_grid(gen, rows, cols, range(0, gen.meta.num_ws), psi=0.7)  # (the same styles, other batches)
    assert_same_pictures(everything[1:, 1:], np.broadcast_to(everything[0:1, 1:], everything[1:, 1:].shape))
    ws = np.zeros((2, 4, 1)), np.ones((3, 4, 1))
    mixed = mix_styles(*ws, range(1, 3))
    assert mixed.shape == (2, 3, 4, 1) and mixed[..., 0].tolist() == [[[0, 1, 1, 0]] * 3] * 2


def test_walk_and_mix_cli_without_torch(gen, tmp_path):
    bundle = str(gen.bundle.path)
    gif = tmp_path / "walk.gif"
    p = gen_without_torch("walk", bundle, "--seeds", "3,17", "--seconds", "1", "--fps", "4", "--size", "24", "--out",
                          str(gif))
    assert p.returncode == 0, p.stderr
    import imageio.v3 as iio

    frames = iio.imread(gif, index=None)
    assert frames.shape[:3] == (4, 24, 24)
    mp4 = tmp_path / "walk.mp4"
    p = gen_without_torch("walk", bundle, "--seeds", "3,17", "--seconds", "0.5", "--fps", "4", "--out", str(mp4))
    assert p.returncode == 0 and mp4.stat().st_size > 0, p.stderr
    png = tmp_path / "mix.png"
    p = gen_without_torch("mix", bundle, "--rows", "1,2", "--cols", "3-5", "--styles", "middle", "--out", str(png))
    assert p.returncode == 0 and png.exists(), p.stderr
    p = gen_without_torch("walk", bundle, "--seeds", "3", "--out", str(tmp_path / "w.avi"))
    assert p.returncode == 2 and ".gif or .mp4" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = gen_without_torch("mix", bundle, "--styles", "9-12", "--out", str(png), "--overwrite")
    assert p.returncode == 2 and "within 0-5" in p.stderr
    assert not Path(tmp_path / "w.avi").exists()
