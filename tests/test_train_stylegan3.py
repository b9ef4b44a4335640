"""Training StyleGAN3 (--variant stylegan3-t|r): configs from a preset, short real runs, exact resume, R's blur of
D's inputs, and a trained run through gen export and gen verify."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from conftest import MICRO, micro_train, run_gen, run_gen_steps
from gen.runtime.errors import GenError
from gen.train import checkpoint as ckpt
from gen.train.config import (
    Stylegan3Config,
    discriminator_config,
    get_preset,
    model_with,
    stylegan3_config,
    stylegan3_train,
)
from gen.train.losses import blur_images, blur_sigma_at
from gen.train.sample import load_generator
from gen.train.stylegan3 import Generator3
from gen.train.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")  # steady on a busy machine (conftest)
VARIANTS3 = ("stylegan3-t", "stylegan3-r")
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same for `gen` in a subprocess


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0 for k in a)


def test_configs_from_a_preset_follow_nvlabs():
    tiny = get_preset("tiny")
    t, r = (model_with(tiny.model, {"variant": v}) for v in VARIANTS3)
    assert isinstance(t, Stylegan3Config) and t.variant == "stylegan3-t" and r.variant == "stylegan3-r"
    assert (t.resolution, t.z_dim, t.w_dim, t.mapping_layers) == (32, 64, 64, 2)
    assert (t.num_layers, t.margin_size, t.num_critical) == (6, 4, 2)  # small enough for a CPU
    assert (t.channel_base, t.channel_max) == (1024, 64)
    assert (r.channel_base, r.channel_max) == (2048, 128) and r.conv_kernel == 1 and r.radial_filters  # R: doubled
    # D: StyleGAN2's, of the undoubled widths, the same for T and R, from the G config alone
    d = discriminator_config(r)
    assert d == discriminator_config(t)
    assert (d.variant, d.resolution, d.channel_base, d.channel_max, d.mbstd_group, d.conv_clamp) == (
        "stylegan2", 32, 1024, 64, 4, 256.0)
    assert discriminator_config(tiny.model) is tiny.model
    big = model_with(get_preset("paper256").model, {"variant": "stylegan3-r"})
    assert (big.num_layers, big.margin_size, big.channel_base, big.channel_max) == (14, 10, 32768, 1024)
    assert model_with(tiny.model, {"variant": "stylegan3-t", "resolution": 64}).num_layers == 8
    # NVlabs' training settings: no path length nor style mixing; R's blur fades over batch * 200 / 32 kimg
    cfg_t, cfg_r = (stylegan3_train(tiny.train, v) for v in VARIANTS3)
    assert cfg_t.pl_weight == cfg_r.pl_weight == 0 and cfg_t.style_mixing == cfg_r.style_mixing == 0
    assert (cfg_t.blur_sigma, cfg_r.blur_sigma, cfg_r.blur_kimg) == (0, 10, tiny.train.batch * 200 / 32)
    with pytest.raises(GenError, match="unknown variant 'stylegan3-x'; choose one of stylegan2, stylegan1, "
                                       "stylegan3-t, stylegan3-r"):
        model_with(tiny.model, {"variant": "stylegan3-x"})
    with pytest.raises(GenError, match="cannot become stylegan2"):
        model_with(t, {"variant": "stylegan2"})


def test_blur_fades_and_keeps_a_flat_picture_flat():
    assert [blur_sigma_at(n, 10, 50) for n in (0, 25_000, 50_000, 90_000)] == [10, 5, 0, 0]
    assert blur_sigma_at(1000, 10, 0) == 0 and blur_sigma_at(0, 0, 50) == 0
    flat = torch.full((2, 3, 16, 16), 0.3)
    flat[1] = -0.7
    for sigma in (0.5, 2, 10):  # 10: taps reach 30 px out, beyond the 16 px picture
        assert torch.allclose(blur_images(flat, sigma), flat, atol=1e-6)
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = blur_images(noise, 2)
    assert blurred.shape == noise.shape and blurred.std() < noise.std() / 3
    assert abs(blurred.mean() - noise.mean()) < 0.05
    assert blur_images(noise, 0.3) is noise  # under a third of a pixel: no taps beside the centre
    # separable Gaussian: an impulse spreads symmetrically, its peak in place, summing to one
    impulse = torch.zeros(1, 1, 33, 33)
    impulse[0, 0, 16, 16] = 1
    spread = blur_images(impulse, 3)[0, 0]
    assert torch.allclose(spread, spread.flip(0)) and torch.allclose(spread, spread.t())
    assert spread.argmax() == 16 * 33 + 16 and abs(spread.sum() - 1) < 1e-5


@pytest.mark.parametrize("variant", VARIANTS3)
def test_short_run_trains_g3_against_sg2_d(variant, emoji_subset, tmp_path):
    model = stylegan3_config(MICRO, variant)
    out = tmp_path / "run"
    state = train(emoji_subset, out, model, stylegan3_train(micro_train(steps=4), variant), device="cpu", workers=0)
    assert state.step == 4 and isinstance(state.G, Generator3) and state.D.cfg == discriminator_config(model)
    [record] = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for v in record.values()) and "pl" not in record
    # input magnitudes tracked (on the D step's generator pass) with NVlabs' beta for the batch, copied to G_ema
    layers = state.G.synthesis.layers
    assert all(layer.magnitude_ema_beta == 0.5 ** (4 / 20_000) for layer in layers)
    mags = torch.stack([layer.magnitude_ema for layer in layers])
    assert (mags != 1).all() and torch.equal(mags, torch.stack([x.magnitude_ema for x in state.G_ema.synthesis.layers]))
    torch.manual_seed(0)  # the trainer's initial weights
    init = Generator3(model).state_dict()
    assert max_diff({k: init[k] for k, _ in state.G_ema.named_parameters()}, dict(state.G_ema.named_parameters())) > 0
    meta = ckpt.read_meta(out)
    assert meta["model"]["variant"] == variant and meta["train"]["pl_weight"] == 0
    assert meta["train"]["style_mixing"] == 0
    if variant == "stylegan3-r":
        assert (meta["train"]["blur_sigma"], meta["train"]["blur_kimg"]) == (10, 4 * 200 / 32)
        assert 9.99 < record["blur_sigma"] < 10  # fading from the first step on
    else:
        assert meta["train"]["blur_sigma"] == 0 and "blur_sigma" not in record
    G = load_generator(out)
    assert isinstance(G, Generator3) and G(torch.randn(2, MICRO.z_dim)).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("variant", VARIANTS3)
def test_resume_equals_straight_run(variant, emoji_subset, tmp_path):
    n = 3  # odd: the checkpoint lands between R1 steps and mid ADA interval
    model = stylegan3_config(MICRO, variant)

    def cfg(steps: int):
        return stylegan3_train(micro_train(steps, ada_target=-1.0), variant)

    straight, split = tmp_path / "straight", tmp_path / "split"
    train(emoji_subset, straight, model, cfg(2 * n), device="cpu", workers=0)
    train(emoji_subset, split, model, cfg(n), device="cpu", workers=0)
    train(emoji_subset, split, model, cfg(2 * n), device="cpu", workers=0, resume=True)
    a, meta_a = ckpt.load_checkpoint(straight)
    b, meta_b = ckpt.load_checkpoint(split)
    assert meta_a["counters"] == meta_b["counters"] == {"step": 2 * n, "nimg": 8 * n, "world": 1}
    for part in ("G", "D", "G_ema", "opt_G", "opt_D", "augment"):
        sub_a = {k: v for k, v in a.items() if k.split(".")[0] == part}
        sub_b = {k: v for k, v in b.items() if k.split(".")[0] == part}
        assert max_diff(sub_a, sub_b) <= 1e-6, part
    assert all(v.item() != 1 for k, v in b.items() if k.startswith("G_ema.") and k.endswith("magnitude_ema"))


def test_unknown_variant_is_one_line(emoji_subset, tmp_path):
    p = run_gen("train", str(emoji_subset), "--out", str(tmp_path / "run"), "--variant", "stylegan3-x",
                "--device", "cpu", env=ONE_THREAD)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: unknown variant 'stylegan3-x'; choose one of stylegan2, stylegan1, stylegan3-t, stylegan3-r"]
    assert not (tmp_path / "run").exists()


def test_cli_trains_stylegan3_t_and_the_run_exports_and_verifies(emoji_subset, tmp_path):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    p, exported, verified = run_gen_steps(  # one interpreter: export and verify leave the run as it is
        ["train", str(emoji_subset), "--out", str(run), "--preset", "tiny", "--variant", "stylegan3-t",
         "--resolution", "16", "--batch", "4", "--kimg", "0.008", "--workers", "0", "--device", "cpu"],
        ["export", str(run), "--out", str(bundle)], ["verify", str(bundle)], env=ONE_THREAD)
    assert p.returncode == 0, p.stderr
    meta = ckpt.read_meta(run)
    assert meta["model"]["variant"] == "stylegan3-t" and meta["model"]["num_layers"] == 4
    assert meta["train"]["pl_weight"] == 0 and meta["counters"]["step"] == 2
    assert list(run.glob("grid-*.png"))
    assert exported.returncode == 0, exported.stderr
    assert verified.returncode == 0 and "all within tolerance" in verified.stdout, verified.stdout + verified.stderr
