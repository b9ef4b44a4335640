"""StyleGAN3 (T and R) in the PyTorch reference: imported NVlabs generators draw NVlabs' own pictures.

tests/data/nvlabs-sg3/ holds data only (its README.md says how NVlabs' stylegan3 code made it): random 32 px T and
R generators under NVlabs' names and the pictures their code drew, with the identity, a translated and a rotated
input transform."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nvlabs_fakes import dump_nvlabs, payload, persistent_network
from safetensors.torch import load_file

from conftest import assert_same_pictures
from gen.runtime.errors import GenError
from gen.train import checkpoint as ckpt
from gen.train.importers.pickles import read_model_file
from gen.train.importers.stylegan3 import generator_config, generator_state, is_stylegan3
from gen.train.stylegan3 import Generator3, Stylegan3Config, lowpass_filter, upfirdn2d

DATA = Path(__file__).parent / "data" / "nvlabs-sg3"
SEEDS = [0, 1, 2, 3]


def their_generator(name: str, tmp_path: Path, marker: Path, change=None):
    """The generator as read back from an NVlabs snapshot pickle (never their code: data only)."""
    tensors = {k: v.float() for k, v in load_file(DATA / f"{name}.safetensors").items()}
    kwargs = json.loads((DATA / f"{name}.json").read_text())["G_ema"]["init_kwargs"]
    kwargs |= change or {}
    G = persistent_network("Generator", kwargs, ckpt.subdict(tensors, "G_ema"))
    pkl = dump_nvlabs(tmp_path / f"{name}.pkl", {"G": G, "D": None, "G_ema": G}, payload(marker))
    return read_model_file(pkl).networks["G_ema"]


def draw_float(G: Generator3, psi: float, transform: np.ndarray | None = None, seeds=SEEDS) -> np.ndarray:
    z = torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, G.cfg.z_dim) for s in seeds])).float()
    with torch.no_grad():
        return G(z, psi=psi, transform=None if transform is None else torch.from_numpy(transform).float()).numpy()


def draw(G: Generator3, psi: float, transform: np.ndarray | None = None, seeds=SEEDS) -> np.ndarray:
    img = torch.from_numpy(draw_float(G, psi, transform, seeds))
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def pattern(img: np.ndarray) -> np.ndarray:
    """A picture's spatial pattern: each channel less its mean (what a camera move changes)."""
    return img - img.mean(axis=(2, 3), keepdims=True)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name, variant", [("sg3t-32", "stylegan3-t"), ("sg3r-32", "stylegan3-r")])
def test_imported_generator_draws_nvlabs_pictures(tmp_path, marker, name, variant):
    """psi 1 and 0.7, with the identity, a translated and a rotated camera; our filters equal theirs."""
    theirs = their_generator(name, tmp_path, marker)
    assert is_stylegan3(theirs)
    cfg = generator_config(theirs, name)
    assert cfg.variant == variant and cfg.conv_kernel == (1 if variant == "stylegan3-r" else 3)
    G = Generator3(cfg).eval()
    G.load_state_dict(generator_state(theirs, cfg, name))
    with np.load(DATA / f"{name}-pictures.npz") as f:
        ref = dict(f)
    for suffix in ("", "-shift", "-turn"):
        for psi in (1.0, 0.7):
            assert_same_pictures(draw(G, psi, ref[f"transform{suffix}"]), ref[f"psi{psi:.1f}{suffix}"])
            # and as floats: the pictures are of low contrast, so their spatial pattern is held to NVlabs' too
            got, want = draw_float(G, psi, ref[f"transform{suffix}"]), ref[f"float-psi{psi:.1f}{suffix}"]
            assert np.abs(got - want).max() < 1e-5 and rel_l2(pattern(got), pattern(want)) < 1e-4
            if suffix:  # the camera matters: a moved one draws another pattern
                assert rel_l2(pattern(want), pattern(ref[f"float-psi{psi:.1f}"])) > 0.5


def test_a_picture_does_not_depend_on_its_batch(tmp_path, marker):
    theirs = their_generator("sg3t-32", tmp_path, marker)
    cfg = generator_config(theirs, "sg3t")
    G = Generator3(cfg).eval()
    G.load_state_dict(generator_state(theirs, cfg, "sg3t"))
    together = draw(G, 0.7, seeds=[5, 6, 7])
    for i, seed in enumerate([5, 6, 7]):
        assert_same_pictures(draw(G, 0.7, seeds=[seed]), together[i:i + 1])


@pytest.mark.parametrize("change, words", [
    ({"conv_kernel": 1}, "1x1 convs with radial filters False, neither config T nor R"),
    ({"first_cutoff": 3}, "'synthesis.L0_24_32.up_filter' is not the low-pass filter its layout calls for"),
    ({"num_layers": 5}, "7 synthesis layers, not the 6"),
    ({"unknown_arg": 1}, "built with 'unknown_arg', which gen does not know"),
], ids=["kernel", "filters", "layers", "unknown"])
def test_what_gen_cannot_represent_is_one_line(tmp_path, marker, change, words):
    theirs = their_generator("sg3t-32", tmp_path, marker, change)
    with pytest.raises(GenError) as e:
        generator_state(theirs, generator_config(theirs, "'g.pkl'"), "'g.pkl'")
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_upfirdn2d_is_the_textbook_resampler():
    """Zero insertion, a centred FIR filter and decimation, against a direct NumPy computation."""
    rng = np.random.RandomState(0)
    x = rng.randn(1, 2, 5, 5).astype(np.float32)
    f = lowpass_filter(12, cutoff=4, width=6, rate=32).numpy() * np.linspace(0.5, 1.5, 12)  # lopsided: flips count
    got = upfirdn2d(torch.from_numpy(x), torch.from_numpy(f), up=2, pad=(6, 5, 6, 5), gain=4).numpy()
    up = np.zeros((1, 2, 10, 10), np.float32)
    up[:, :, ::2, ::2] = x
    up = np.pad(up, ((0, 0), (0, 0), (6, 5), (6, 5)))
    k = np.outer(f, f) * 4
    want = np.zeros((1, 2, up.shape[2] - 11, up.shape[3] - 11), np.float32)
    for i in range(want.shape[2]):
        for j in range(want.shape[3]):
            want[:, :, i, j] = (up[:, :, i:i + 12, j:j + 12] * k[::-1, ::-1]).sum(axis=(2, 3))
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)
    assert abs(float(lowpass_filter(12, 4, 6, 32).sum()) - 1) < 1e-6  # unit DC gain
    radial = lowpass_filter(12, 4, 6, 32, radial=True)
    assert radial.shape == (12, 12) and torch.allclose(radial, radial.t()) and abs(float(radial.sum()) - 1) < 1e-6


def test_config_is_checked():
    with pytest.raises(GenError, match="unknown StyleGAN3 variant"):
        Stylegan3Config(variant="stylegan3-x")
    with pytest.raises(GenError, match="power of two"):
        Stylegan3Config(resolution=48)
