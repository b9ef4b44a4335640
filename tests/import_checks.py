"""What every importer test checks of an imported run, in-process (torch: kept out of conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from conftest import assert_same_pictures
from gen.train import checkpoint as ckpt
from gen.train.config import model_from_json
from gen.train.discriminator import Discriminator
from gen.train.sample import generate, load_generator


def assert_run_computes_reference(run: Path, reference: dict, seeds: list[int]):
    """G_ema draws reference["psi1.0"] and ["psi0.7"] (const noise) and D gives reference["d_logits"] on the psi 1
    pictures, as the original code did. Returns (G, tensors) for further checks."""
    G = load_generator(run)
    for psi in (1.0, 0.7):
        assert_same_pictures(generate(G, seeds, psi, noise_mode="const"), reference[f"psi{psi:.1f}"])
    tensors, meta = ckpt.load_checkpoint(run)
    D = Discriminator(model_from_json(meta["model"])).eval()
    ckpt.load_module(D, ckpt.subdict(tensors, "D"), "D")
    x = torch.from_numpy(reference["psi1.0"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        assert np.allclose(D(x).numpy().ravel(), reference["d_logits"].ravel(), atol=1e-5)
    return G, tensors
