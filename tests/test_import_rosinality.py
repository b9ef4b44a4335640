"""`gen import` of rosinality/stylegan2-pytorch checkpoints: the imported run and its bundle draw their pictures.

tests/data/rosinality/ holds data only (its README.md says how their code made it): the weights of a random 32 px
StyleGAN2 g_ema and d under their names, latent_avg, the pictures their Generator drew and their D's logits. The
tests build the .pt checkpoint from it as their train.py saves one."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from import_checks import assert_run_computes_reference
from safetensors.torch import load_file

from conftest import assert_import_round_trip, assert_same_pictures, import_each
from gen.runtime.errors import GenError
from gen.train import checkpoint as ckpt
from gen.train.importers import import_model
from gen.train.importers.rosinality import W_AVG_SAMPLES
from gen.train.sample import generate, load_generator

DATA = Path(__file__).parent / "data" / "rosinality"
SEEDS = [0, 1, 2, 3]


def reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "ros-32-pictures.npz") as f:
        return dict(f)


def their_checkpoint(path: Path, drop: tuple[str, ...] = (), g_ema_change=None) -> Path:
    """A checkpoint as their train.py saves it: g, d, g_ema, optimiser states, args (a Namespace), ada_aug_p;
    latent_avg as their convert_weight.py adds it."""
    tensors = {k: v.float() for k, v in load_file(DATA / "ros-32.safetensors").items()}
    g_ema = {k[len("g_ema."):]: v for k, v in tensors.items() if k.startswith("g_ema.")}
    if g_ema_change:
        g_ema_change(g_ema)
    data = {"g": {k: v.clone() for k, v in g_ema.items()}, "g_ema": g_ema,
            "d": {k[len("d."):]: v for k, v in tensors.items() if k.startswith("d.")},
            "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99)}]},
            "d_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99)}]},
            "args": argparse.Namespace(**json.loads((DATA / "ros-32.json").read_text())), "ada_aug_p": 0.0,
            "latent_avg": tensors["latent_avg"]}
    torch.save({k: v for k, v in data.items() if k not in drop}, path)
    return path


def test_imported_networks_compute_what_their_code_computes(tmp_path):
    """g_ema's pictures at psi 1 and 0.7 (in-process, no export) and d's logits."""
    found = import_model(their_checkpoint(tmp_path / "550000.pt"), tmp_path / "run")
    assert found.format == "rosinality" and set(found.parameters) == {"G_ema", "G", "D"}
    G, tensors = assert_run_computes_reference(tmp_path / "run", reference(), SEEDS)
    assert (G.cfg.resolution, G.cfg.w_dim, G.cfg.mapping_layers) == (32, 32, 2)
    assert [G.cfg.channels(r) for r in (4, 8, 16, 32)] == [32, 32, 32, 16]
    assert torch.equal(tensors["G_ema.mapping.w_avg"], load_file(DATA / "ros-32.safetensors")["latent_avg"].float())


@pytest.mark.slow
def test_imported_run_and_its_bundle_draw_their_pictures(tmp_path):
    pt = their_checkpoint(tmp_path / "550000.pt")
    words = ("rosinality/stylegan2-pytorch checkpoint", "32x32, 3 channels", "z 32 -> w 32, lr multiplier 0.01",
             "min(512 / res, 32)", "G_ema 66,723", "D 72,561", "optimiser and augmentation state")
    assert_import_round_trip(pt, tmp_path, words, reference(), SEEDS)


def test_a_checkpoint_without_latent_avg_or_d_says_so(tmp_path):
    """train.py saves no latent_avg: w_avg is their generate.py's estimate (the mean w of 4096 random z), the same
    at every import; psi 1 pictures do not use it."""
    found = import_model(their_checkpoint(tmp_path / "a.pt", drop=("latent_avg", "d", "g")), tmp_path / "run")
    assert any(item.startswith("latent_avg") for item in found.lacks), found.lacks
    assert any(item.startswith("d ") for item in found.lacks) and any(item.startswith("g ") for item in found.lacks)
    tensors, _ = ckpt.load_checkpoint(tmp_path / "run")
    assert not any(k.startswith(("G.", "D.")) for k in tensors)
    G = load_generator(tmp_path / "run")
    assert_same_pictures(generate(G, SEEDS, 1.0, noise_mode="const"), reference()["psi1.0"])
    z = torch.from_numpy(np.random.RandomState(0).randn(W_AVG_SAMPLES, 32).astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(tensors["G_ema.mapping.w_avg"], G.mapping.w(z).mean(0), atol=1e-6)
    import_model(their_checkpoint(tmp_path / "a.pt", drop=("latent_avg", "d", "g")), tmp_path / "run2")
    again, _ = ckpt.load_checkpoint(tmp_path / "run2")
    assert torch.equal(again["G_ema.mapping.w_avg"], tensors["G_ema.mapping.w_avg"])


def _leftover(g):
    g["convs.1.extra.weight"] = torch.zeros(3)


def _odd_channels(g):  # a 16-px layer with 24 channels: no channel_base/channel_max rule gives 32, 32, 24, 16
    g["convs.2.conv.weight"] = torch.zeros(1, 24, 32, 3, 3)


def _no_const(g):
    del g["input.input"]


def _blur(g):
    g["convs.0.conv.blur.kernel"] = g["convs.0.conv.blur.kernel"] * 2


def _nan(g):
    g["style.1.weight"][0, 0] = float("nan")


def _integer(g):
    g["style.1.bias"] = torch.zeros(32, dtype=torch.int64)


CANNOT = {  # case: (change, words)
    "leftover": (_leftover, "1 tensor(s) gen has no place for (convs.1.extra.weight)"),
    "channels": (_odd_channels, "channel table {4: 32, 8: 32, 16: 24, 32: 16}"),
    "no-const": (_no_const, "no tensor 'input.input'"),
    "blur": (_blur, "'convs.0.conv.blur.kernel' is not the [1, 3, 3, 1] low-pass filter"),
    "nan": (_nan, "NaN or infinite"),
    "integer": (_integer, "not floating point"),
}


@pytest.fixture(scope="module")
def cannot_imports(tmp_path_factory) -> dict:
    """case: (checkpoint, its folder, `gen import` of it): every case of CANNOT, the commands in one interpreter."""
    return import_each(tmp_path_factory, CANNOT, lambda case, folder: their_checkpoint(
        folder / "odd.pt", drop=("g",), g_ema_change=CANNOT[case][0]))


@pytest.mark.parametrize("case", CANNOT)
def test_what_gen_cannot_represent_is_one_line_and_writes_nothing(cannot_imports, case):
    pt, tmp_path, p = cannot_imports[case]
    words = CANNOT[case][1]
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert words in p.stderr and str(pt) in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()


def test_a_foreign_global_in_a_checkpoint_is_refused_unrun(tmp_path):
    """torch.load runs weights-only: a __reduce__ to os.system is named and never called."""
    marker = tmp_path / "ran"

    class Call:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "hostile.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "args": Call()}, path)
    with pytest.raises(GenError, match="system, which is not model data"):
        import_model(path, tmp_path / "run")
    assert not marker.exists() and not (tmp_path / "run").exists()
