"""StyleGAN export: ONNX graphs vs the PyTorch reference, the runtime sampler, `gen verify`, torch-free use."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import MODELS, assert_same_pictures, gen_without_torch, make_checkpoint
from gen.export.stylegan import export_stylegan
from gen.runtime.bundle import load_bundle, sha256_file
from gen.runtime.latents import seeds_to_z
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.verify import verify
from gen.train.sample import generate, load_generator

GEN_MAX_ABS = 1e-4  # the tolerance the bundle states for synthesis (export/stylegan.py)


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tmp_path_factory):
    if request.param == "sg2-16":  # the session's (conftest.sg2_16_export: the same 3 steps), only read here
        return request.getfixturevalue("sg2_16_export")
    folder = tmp_path_factory.mktemp(request.param)
    checkpoint = make_checkpoint(folder / "checkpoint.safetensors", MODELS[request.param], steps=3)
    bundle, reports = export_stylegan(checkpoint, folder / "bundle")
    return checkpoint, bundle, reports


def test_bundle_passes_its_own_golden_data(exported):
    _, bundle, reports = exported
    checks = verify(bundle, "cpu")
    graphs, pictures = [c for c in checks if c.graph != "pictures"], [c for c in checks if c.graph == "pictures"]
    assert len(graphs) == 12 and len(pictures) == 10 and all(c.ok for c in checks)  # 5 picture cases: ws, image
    assert max(c.max_abs for c in graphs) < GEN_MAX_ABS
    assert max(c.max_abs for c in pictures if c.output == "image") <= 1  # 8-bit levels: rounding ties only
    m = bundle.manifest
    assert m.graphs["synthesis"].inputs[0].shape[0] == "batch"  # dynamic batch, named
    assert reports["synthesis"].nodes_final <= reports["synthesis"].nodes_exported
    for path in bundle.path.glob("*.onnx"):  # no exporter annotations (stack traces hold the machine's paths)
        assert b"stack_trace" not in path.read_bytes() and b"pkg.torch.onnx" not in path.read_bytes(), path.name


@pytest.mark.parametrize("batch", [1, 4, 8])
@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_generator_parity_random_latents(exported, batch, psi):
    checkpoint, bundle, _ = exported
    G, rt = load_generator(checkpoint), BundleGenerator(bundle, "cpu")
    z = np.random.RandomState(batch).randn(batch, G.cfg.z_dim).astype(np.float32) * 1.5
    ws_rt = rt.styles(z, psi)
    with torch.no_grad():
        ws_pt = G.mapping(torch.from_numpy(z), psi=psi).numpy()
        assert np.abs(ws_rt - ws_pt).max() < GEN_MAX_ABS
        # const noise
        img_pt = G.synthesis(torch.from_numpy(ws_rt), noise_mode="const").numpy()
        assert np.abs(rt.synthesize(ws_rt, "const") - img_pt).max() < GEN_MAX_ABS
        # random noise, passed in explicitly so both sides see the same numbers
        noises = [np.random.RandomState(i).randn(batch, *s).astype(np.float32) for i, s in enumerate(rt.noise_shapes)]
        img_pt = G.synthesis(torch.from_numpy(ws_rt), noises=[torch.from_numpy(n) for n in noises]).numpy()
        assert np.abs(rt.synthesize(ws_rt, noises=noises) - img_pt).max() < GEN_MAX_ABS
        # no noise
        img_pt = G.synthesis(torch.from_numpy(ws_rt), noise_mode="none").numpy()
        assert np.abs(rt.synthesize(ws_rt, "none") - img_pt).max() < GEN_MAX_ABS


def test_truncation_cutoff_matches_reference(exported):
    checkpoint, bundle, _ = exported
    G, rt = load_generator(checkpoint), BundleGenerator(bundle, "cpu")
    z = seeds_to_z([5, 6], G.cfg.z_dim)
    with torch.no_grad():
        ref = G.mapping(torch.from_numpy(z), psi=0.5, cutoff=2).numpy()
    assert np.abs(rt.styles(z, 0.5, cutoff=2) - ref).max() < GEN_MAX_ABS


def test_same_seed_same_picture_runtime_and_pytorch(exported):
    checkpoint, bundle, _ = exported
    seeds = list(range(12))
    pt = generate(load_generator(checkpoint), seeds, psi=0.7)
    rt = BundleGenerator(bundle, "cpu").images(seeds, psi=0.7)
    assert pt.shape == rt.shape and pt.dtype == rt.dtype == np.uint8
    assert_same_pictures(pt, rt)


def test_same_seed_same_random_noise_picture_checkpoint_and_bundle(exported):
    """`gen sample RUN --noise-mode random` and `gen sample BUNDLE --noise-mode random` draw the same pictures."""
    from gen.runtime.stylegan.sample import bundle_images
    from gen.train.sample import checkpoint_images

    checkpoint, bundle, _ = exported
    seeds = [0, 5, 9, 2**32 - 1]
    pt = checkpoint_images(checkpoint, seeds, 0.7, None, "random", "cpu")
    rt = bundle_images(bundle.path, seeds, 0.7, None, "random", "cpu")
    assert_same_pictures(pt, rt)
    assert not np.array_equal(pt, checkpoint_images(checkpoint, seeds, 0.7, None, "const", "cpu"))  # the noise shows
    # A seed's noise is its own, whatever batch it is drawn in. The picture is the same up to float rounding:
    # PyTorch's CPU convolutions pick other kernels (and summation orders) for other batch sizes, so a pixel
    # at a .5 rounding tie may land one level apart.
    assert_same_pictures(generate(load_generator(checkpoint), seeds[2:3], 0.7, noise_mode="random")[0], pt[2])


def test_verify_fails_on_a_wrong_reference(exported, tmp_path):
    import shutil

    _, bundle, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    golden = dict(np.load(copy / "golden.npz"))
    key = bundle.manifest.golden.cases[1].outputs["img"]
    golden[key] = golden[key] + 1e-3
    np.savez(copy / "golden.npz", **golden)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["golden.npz"] = {"sha256": sha256_file(copy / "golden.npz"),
                                       "size": (copy / "golden.npz").stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    failed = [c for c in verify(load_bundle(copy), "cpu") if not c.ok]
    assert len(failed) == 1 and failed[0].graph == "synthesis"
    proc = subprocess.run([sys.executable, "-m", "gen.cli", "verify", str(copy)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "FAIL" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "gen.cli", "verify", str(bundle.path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "all within tolerance" in proc.stdout


def test_runtime_samples_and_verifies_without_torch(exported, tmp_path):
    checkpoint, bundle, _ = exported
    grid = tmp_path / "grid.png"
    p = gen_without_torch("sample", str(bundle.path), "--seeds", "0-3", "--trunc", "0.7", "--out", str(grid),
                          "--outdir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert grid.exists() and (tmp_path / "seed0003.png").exists()
    p = gen_without_torch("verify", str(bundle.path))
    assert p.returncode == 0, p.stdout + p.stderr
    p = gen_without_torch("info", str(bundle.path))
    assert p.returncode == 0 and "stylegan" in p.stdout
    p = gen_without_torch("sample", str(checkpoint), "--out", str(grid))  # a checkpoint needs the PyTorch reference
    assert p.returncode == 2 and "pip install 'gen[train]'" in p.stderr


def test_random_noise_pictures_depend_only_on_their_seed(exported):
    _, bundle, _ = exported
    rt = BundleGenerator(bundle, "cpu")
    together = rt.images([3, 4, 5], noise_mode="random", batch=8)
    alone = rt.images([5], noise_mode="random")
    assert_same_pictures(together[2], alone[0])  # batch 3 vs batch 1: other kernels, same noise
    assert not np.array_equal(rt.images([5], noise_mode="const")[0], alone[0])  # the noise does show
