"""The reference generator and discriminator: shapes, determinism, modulation forms, truncation, noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gen.runtime.errors import GenError
from gen.runtime.latents import seed_noise, seeds_to_z
from gen.train.config import PRESETS, ModelConfig
from gen.train.discriminator import Discriminator
from gen.train.layers import UpsampleConv2d
from gen.train.stylegan import Generator, modulated_conv2d, modulated_conv2d_fused


def micro(resolution: int = 16, variant: str = "stylegan2") -> ModelConfig:
    return ModelConfig(resolution=resolution, variant=variant, z_dim=32, w_dim=32, mapping_layers=2,
                       channel_base=512, channel_max=32)


def make_g(cfg: ModelConfig, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(cfg).eval()
    # Fresh G has zero noise strength; give it some so the noise modes matter in these tests.
    with torch.no_grad():
        for layer in G.synthesis.layers:
            layer.noise.strength.fill_(0.3)
    return G


@pytest.mark.parametrize("variant", ["stylegan2", "stylegan1"])
@pytest.mark.parametrize("resolution", [8, 32])
def test_shapes_both_variants(variant, resolution):
    cfg = micro(resolution, variant)
    G, D = make_g(cfg), Discriminator(cfg)
    expected_ws = 2 * cfg.log2_res - 2 if variant == "stylegan2" else 2 * cfg.log2_res - 3
    assert G.num_ws == expected_ws
    ws = G.mapping(torch.randn(3, cfg.z_dim))
    assert ws.shape == (3, G.num_ws, cfg.w_dim)
    img = G.synthesis(ws, noise_mode="const")
    assert img.shape == (3, 3, resolution, resolution) and torch.isfinite(img).all()
    assert D(img).shape == (3,)
    with pytest.raises(ValueError, match=r"ws must be"):
        G.synthesis(ws[:, :-1])


def test_presets_build():
    for name, preset in PRESETS.items():
        if name != "paper256":
            G = Generator(preset.model)
            assert G.synthesis(G.mapping(torch.randn(1, preset.model.z_dim))).shape[-1] == preset.model.resolution


def test_config_rejects_bad_resolution():
    for r in (4, 48, 2048):
        with pytest.raises(GenError, match="power of two"):
            micro(r)


@pytest.mark.parametrize("variant", ["stylegan2", "stylegan1"])
def test_same_seed_bit_identical(variant):
    cfg = micro(16, variant)
    z = torch.from_numpy(seeds_to_z([3, 7], cfg.z_dim))
    a = make_g(cfg, seed=1)(z, psi=0.7, noise_mode="const")
    b = make_g(cfg, seed=1)(z, psi=0.7, noise_mode="const")
    assert torch.equal(a, b)
    torch.manual_seed(5)
    r1 = make_g(cfg, seed=1)(z, noise_mode="random")
    torch.manual_seed(5)
    r2 = make_g(cfg, seed=1)(z, noise_mode="random")
    assert torch.equal(r1, r2)
    assert not torch.equal(a, make_g(cfg, seed=2)(z, psi=0.7, noise_mode="const"))


def test_seeds_to_z_matches_nvlabs_convention():
    z = seeds_to_z([0, 42], 8)
    assert np.array_equal(z[1], np.random.RandomState(42).randn(8).astype(np.float32))
    assert z.dtype == np.float32 and z.shape == (2, 8)


def test_seed_noise_continues_each_seeds_stream_after_its_z():
    shapes = [(1, 4, 4), (1, 8, 8)]
    noise = seed_noise([42, 7], 8, shapes)
    assert [n.shape for n in noise] == [(2, 1, 4, 4), (2, 1, 8, 8)] and noise[0].dtype == np.float32
    rng = np.random.RandomState(42)
    assert np.array_equal(rng.randn(8).astype(np.float32), seeds_to_z([42], 8)[0])
    assert np.array_equal(noise[0][0], rng.randn(1, 4, 4).astype(np.float32))
    assert np.array_equal(noise[1][0], rng.randn(1, 8, 8).astype(np.float32))
    assert np.array_equal(seed_noise([7], 8, shapes)[1][0], noise[1][1])  # whatever the batch


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_nonfused_modulation_agree(up, demodulate):
    torch.manual_seed(0)
    x = torch.randn(4, 16, 8, 8)
    weight = torch.randn(24, 16, 3, 3) / 12
    styles = torch.randn(4, 16) + 1
    a = modulated_conv2d(x, weight, styles, demodulate, UpsampleConv2d() if up else None)
    b = modulated_conv2d_fused(x, weight, styles, demodulate, up)  # the textbook order: up-sample, then conv
    assert a.shape == b.shape == (4, 24, 16 if up else 8, 16 if up else 8)
    assert (a - b).abs().max().item() <= 1e-5


def test_demodulation_gives_unit_variance():
    torch.manual_seed(0)
    x = torch.randn(64, 32, 16, 16)
    out = modulated_conv2d(x, torch.randn(32, 32, 3, 3), torch.rand(64, 32) * 3 + 0.1)
    assert abs(out.std().item() - 1.0) < 0.05  # what demodulation is for


def test_truncation_psi_and_cutoff():
    cfg = micro(16)
    G = make_g(cfg)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    z = torch.randn(4, cfg.z_dim)
    ws = G.mapping(z)
    at_avg = G.mapping(z, psi=0.0)
    assert torch.allclose(at_avg, G.mapping.w_avg.expand_as(at_avg))
    half = G.mapping(z, psi=0.5, cutoff=2)
    assert torch.allclose(half[:, :2], (ws[:, :2] + G.mapping.w_avg) / 2, atol=1e-6)
    assert torch.equal(half[:, 2:], ws[:, 2:])
    imgs = G(z, psi=0.0, noise_mode="const")
    assert (imgs - imgs[:1]).abs().max() < 1e-5  # psi 0: every z draws the average picture


def test_noise_modes():
    cfg = micro(16)
    G = make_g(cfg)
    ws = G.mapping(torch.randn(2, cfg.z_dim))
    const_a, const_b = G.synthesis(ws, "const"), G.synthesis(ws, "const")
    assert torch.equal(const_a, const_b)
    assert not torch.equal(G.synthesis(ws, "random"), G.synthesis(ws, "random"))
    none = G.synthesis(ws, "none")
    assert not torch.equal(none, const_a)
    with torch.no_grad():
        for layer in G.synthesis.layers:
            layer.noise.strength.zero_()
    assert torch.equal(G.synthesis(ws, "none"), G.synthesis(ws, "random"))
    noises = [torch.zeros(1, 1, *s[2:]) for s in G.synthesis.noise_shapes()]
    assert torch.equal(G.synthesis(ws, "const", noises=noises), G.synthesis(ws, "none"))
    with pytest.raises(GenError, match="unknown noise mode 'loud'"):
        G.synthesis(ws, "loud")


def test_style_mixing_changes_only_later_layers():
    # Styles of the coarse layers fix the coarse picture: swapping fine styles keeps the 4x4 output equal.
    cfg = micro(16)
    G = make_g(cfg)
    ws_a, ws_b = G.mapping(torch.randn(1, cfg.z_dim)), G.mapping(torch.randn(1, cfg.z_dim))
    mixed = torch.cat([ws_a[:, :2], ws_b[:, 2:]], dim=1)
    feats = {}
    G.synthesis.layers[0].register_forward_hook(lambda m, i, o: feats.setdefault(len(feats), o))
    G.synthesis(ws_a, "const")
    G.synthesis(mixed, "const")
    assert torch.equal(feats[0], feats[1])
