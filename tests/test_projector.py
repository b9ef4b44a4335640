"""The projector: it recovers a generated picture, its w reproduces the picture in the runtime, `gen project`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHIPPED, run_gen_steps
from gen.runtime.errors import GenError
from gen.runtime.stylegan.walk import WalkSettings, walk_frames
from gen.runtime.verify import psnr
from gen.train.projector import ProjectSettings, learning_rate, noise_regularisation, project
from gen.train.sample import generate, load_generator

PHOTO = SHIPPED / "photos" / "chelsea.jpg"


def gen_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gen.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def tiny(sg2_16_export):
    """A few-step sg2-16 checkpoint (noise made to matter), its generator, and its bundle: the session's
    (conftest.sg2_16_export), only read."""
    checkpoint, bundle, _ = sg2_16_export
    return checkpoint, load_generator(checkpoint), bundle


def test_learning_rate_ramps_up_then_eases_to_zero():
    s = ProjectSettings()
    assert learning_rate(s, 0.0) == 0.0
    assert learning_rate(s, 0.5) == pytest.approx(s.lr)
    assert 0 < learning_rate(s, 0.9) < learning_rate(s, 0.8) < s.lr and learning_rate(s, 1.0) == pytest.approx(0)


def test_noise_regularisation_tells_white_noise_from_smooth():
    gen = torch.Generator().manual_seed(0)
    white = [torch.randn(1, 1, 32, 32, generator=gen)]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8, generator=gen), size=32, mode="bilinear")]
    smooth = [(s - s.mean()) / s.std() for s in smooth]
    assert noise_regularisation(white) < 0.01 * noise_regularisation(smooth)


def test_psnr_of_8_bit_pictures_uses_the_8_bit_peak():
    a = np.full((4, 4, 3), 100, np.uint8)
    assert psnr(a + 1, a, peak=255) == pytest.approx(20 * np.log10(255))
    assert psnr(a, a, peak=255) == float("inf")


def test_projection_depends_on_its_seed_and_leaves_the_callers_rng_alone(tiny):
    _, G, _ = tiny
    target = generate(G, [7], psi=1.0)[0]
    settings = ProjectSettings(steps=3)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    a = project(G, target, settings, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(2)
    assert np.array_equal(project(G, target, settings, seed=4).ws, a.ws)
    assert not np.array_equal(project(G, target, settings, seed=5).ws, a.ws)


@pytest.mark.parametrize("w_plus, steps", [(False, 100), (True, 150)])
def test_projection_recovers_a_generated_picture(tiny, w_plus, steps):
    _, G, _ = tiny
    target = generate(G, [7], psi=1.0)[0]
    start = generate(G, [7], psi=0.0)[0]  # the picture of w_avg, where the search begins
    assert psnr(start, target, peak=255) < 15
    result = project(G, target, ProjectSettings(steps=steps, w_plus=w_plus))
    assert result.ws.shape == ((G.num_ws if w_plus else 1), G.cfg.w_dim)
    assert result.psnr >= 25, result.psnr
    assert result.noises is None


def test_projected_w_reproduces_the_picture_in_the_runtime(tiny):
    """What makes a projection usable torch-free: the bundle's synthesis of w.npy is projected.png."""
    from gen.runtime.images import nchw_to_images
    from gen.runtime.stylegan.generator import BundleGenerator

    _, G, bundle = tiny
    result = project(G, generate(G, [11], psi=1.0)[0], ProjectSettings(steps=20))
    rt = BundleGenerator(bundle, "cpu")
    ws = np.broadcast_to(result.ws, (1, rt.meta.num_ws, rt.meta.w_dim)).astype(np.float32)
    runtime_image = nchw_to_images(rt.synthesize(np.ascontiguousarray(ws), "const"))[0]
    assert np.abs(runtime_image.astype(int) - result.image.astype(int)).max() <= 1
    # gen walk --space w passes through it: the keyframe at the projected w is the projection.
    settings = WalkSettings(space="w", seconds_per_seed=1, fps=4)
    frames = list(walk_frames(rt, [3, result.ws, 9], settings))
    assert len(frames) == 12 and np.abs(frames[4].astype(int) - result.image.astype(int)).max() <= 1
    with pytest.raises(GenError, match="--space w"):
        list(walk_frames(rt, [3, result.ws], WalkSettings(space="z")))
    with pytest.raises(GenError, match="must be"):
        list(walk_frames(rt, [3, result.ws[:, :-1]], settings))


def test_optimised_noise_stays_unit_white_noise(tiny):
    _, G, _ = tiny
    result = project(G, generate(G, [5], psi=1.0)[0], ProjectSettings(steps=15, optimize_noise=True))
    assert len(result.noises) == len(G.synthesis.layers)
    for n in result.noises:
        assert abs(n.mean()) < 1e-4 and abs(n.std() - 1) < 1e-2


def test_gen_project_writes_picture_w_comparison_and_video(tiny, tmp_path):
    checkpoint, G, bundle = tiny
    out, video = tmp_path / "proj", tmp_path / "search.gif"
    p, again = run_gen_steps(  # one interpreter; the files are checked after the second run refused to replace them
        ["project", str(PHOTO), "--checkpoint", str(checkpoint), "--out", str(out), "--steps", "12", "--w-plus",
         "--video", str(video), "--device", "cpu"],
        ["project", str(PHOTO), "--checkpoint", str(checkpoint), "--out", str(out), "--steps", "2"])
    assert p.returncode == 0, p.stderr
    assert "PSNR" in p.stderr
    assert again.returncode == 2 and "--overwrite" in again.stderr  # an earlier projection is kept
    assert np.load(out / "w.npy").shape == (G.num_ws, G.cfg.w_dim)
    assert Image.open(out / "projected.png").size == Image.open(out / "target.png").size == (16, 16)
    assert Image.open(out / "compare.png").size == (2 * 256 + 6, 256 + 4)  # target | projection, 16x up, padded
    assert Image.open(video).n_frames == 12
    walk = gen_cli("walk", str(bundle.path), "--seeds", f"3,{out / 'w.npy'}", "--space", "w", "--fps", "4",
                   "--seconds", "2", "--out", str(tmp_path / "walk.gif"))
    assert walk.returncode == 0, walk.stderr
    assert Image.open(tmp_path / "walk.gif").n_frames == 8


REFUSALS = {
    "missing photo": "does not exist",
    "bundle": "is a bundle; projecting needs gradients",
    "no checkpoint": "no checkpoint at",
    "zero steps": "--steps must be at least 1",
    "bad video": ".mp4",
}


@pytest.fixture(scope="module")
def refused(tiny, tmp_path_factory) -> dict:
    """case: (its folder, `gen project` of it) for each of REFUSALS, the commands in one interpreter."""
    checkpoint, _, bundle = tiny
    folders = {case: tmp_path_factory.mktemp("refused") for case in REFUSALS}

    def args(case: str, tmp_path: Path) -> list[str]:
        return {"missing photo": [str(tmp_path / "nope.jpg"), "--checkpoint", str(checkpoint)],
                "bundle": [str(PHOTO), "--checkpoint", str(bundle.path)],
                "no checkpoint": [str(PHOTO), "--checkpoint", str(tmp_path)],
                "zero steps": [str(PHOTO), "--checkpoint", str(checkpoint), "--steps", "0"],
                "bad video": [str(PHOTO), "--checkpoint", str(checkpoint), "--video", str(tmp_path / "v.avi")]}[case]

    done = run_gen_steps(*(["project", *args(case, folders[case]), "--out", str(folders[case] / "out"), "--device",
                            "cpu"] for case in REFUSALS))
    return {case: (folders[case], p) for case, p in zip(REFUSALS, done)}


@pytest.mark.parametrize("case", REFUSALS)
def test_gen_project_refuses_bad_input_in_one_line(refused, case):
    tmp_path, p = refused[case]
    message = REFUSALS[case]
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out" / "w.npy").exists()
