"""NVlabs stylegan3 generators (configs T and R) -> our Generator3's config and state dict.

Their names -> ours: mapping.fc{i} -> mapping.layers.{i}; synthesis.input keeps its names; the layers
synthesis.L{i}_{size}_{channels} -> synthesis.layers.{i}. Their low-pass filters are buffers computed from the
layout: each must equal the one our plan computes (else the file describes another network), and a filter they
store as None (one tap) is our [1].
"""

from __future__ import annotations

import re

import torch

from gen.runtime.errors import GenError

from .. import checkpoint as ckpt
from ..stylegan3 import Generator3, Stylegan3Config
from .base import Imported, Taker, check_converted, plain
from .pickles import ModelFile, PersistentObject

# NVlabs' SynthesisNetwork and SynthesisLayer defaults, for arguments a pickle does not record
DEFAULTS = dict(channel_base=32768, channel_max=512, num_layers=14, num_critical=2, first_cutoff=2,
                first_stopband=2**2.1, last_stopband_rel=2**0.3, margin_size=10, output_scale=0.25,
                conv_kernel=3, filter_size=6, lrelu_upsampling=2, use_radial_filters=False, conv_clamp=256)
MAPPING_DEFAULTS = dict(num_layers=2, lr_multiplier=0.01)
IGNORED = {"num_fp16_res", "magnitude_ema_beta", "z_dim", "w_dim", "c_dim", "img_resolution", "img_channels",
           "mapping_kwargs"}  # FP16 is a GPU speed-up; the EMA rate only matters when training


def is_stylegan3(G: PersistentObject) -> bool:
    synthesis = G.modules().get("synthesis")
    return synthesis is not None and "input" in synthesis.modules() and any(
        re.fullmatch(r"L\d+_\d+_\d+", name) for name in synthesis.modules())


def generator_config(G: PersistentObject, what: str) -> Stylegan3Config:
    kw = G.init_kwargs
    unknown = sorted(str(k) for k in kw if k not in DEFAULTS and k not in IGNORED)
    if unknown:
        raise GenError(f"{what} was built with '{unknown[0]}', which gen does not know; gen cannot represent it, so "
                       "nothing was imported")
    s = {k: plain(kw.get(k, v)) for k, v in DEFAULTS.items()}
    mapping = kw.get("mapping_kwargs") or {}
    if not isinstance(mapping, dict):
        raise GenError(f"{what}'s mapping_kwargs are not a dict; the pickle is damaged")
    m = {**MAPPING_DEFAULTS, **mapping}
    if kw.get("img_channels", 3) != 3:
        raise GenError(f"{what} draws {kw.get('img_channels')!r} channels (gen draws RGB); nothing was imported")
    layout = (s["conv_kernel"], s["use_radial_filters"])
    variant = {(3, False): "stylegan3-t", (1, True): "stylegan3-r"}.get(layout) if all(
        isinstance(v, (int, bool)) for v in layout) else None
    if variant is None:
        raise GenError(f"{what} has {s['conv_kernel']}x{s['conv_kernel']} convs with radial filters "
                       f"{bool(s['use_radial_filters'])}, neither config T nor R; gen cannot represent it, so nothing "
                       "was imported")
    try:
        return Stylegan3Config(
            resolution=int(kw["img_resolution"]), variant=variant, z_dim=int(kw["z_dim"]), w_dim=int(kw["w_dim"]),
            c_dim=int(kw.get("c_dim") or 0), mapping_layers=int(m["num_layers"]),
            mapping_lr_mul=float(m["lr_multiplier"]), channel_base=int(s["channel_base"]),
            channel_max=int(s["channel_max"]), num_layers=int(s["num_layers"]), num_critical=int(s["num_critical"]),
            first_cutoff=float(s["first_cutoff"]), first_stopband=float(s["first_stopband"]),
            last_stopband_rel=float(s["last_stopband_rel"]), margin_size=int(s["margin_size"]),
            output_scale=float(s["output_scale"]), filter_size=int(s["filter_size"]),
            lrelu_upsampling=int(s["lrelu_upsampling"]),
            conv_clamp=None if s["conv_clamp"] is None else float(s["conv_clamp"]))
    except KeyError as e:
        raise GenError(f"{what} lacks its {e.args[0]} argument; the pickle is damaged") from None
    except (TypeError, ValueError) as e:
        raise GenError(f"{what} was built with arguments gen cannot read ({e})") from None


def convert(model: ModelFile) -> tuple[Imported, dict[str, torch.Tensor]]:
    """A read NVlabs stylegan3 ModelFile -> what was found and the checkpoint's tensors (G_ema and G prefixed).
    D is left out: gen fine-tunes imported StyleGAN2 models only (StyleGAN3 trains from scratch with
    `gen train --variant stylegan3-t|r`), and nothing else uses it."""
    nets = model.networks
    g_name = "G_ema" if "G_ema" in nets else "G"
    cfg = generator_config(nets[g_name], f"'{model.path}' {g_name}")
    kw = nets[g_name].init_kwargs
    found = Imported(model.path, "stylegan3", cfg, 3, cfg.c_dim, int(plain(kw.get("num_fp16_res", 0)) or 0))
    tensors: dict[str, torch.Tensor] = {}
    moved = False
    for name in ("G_ema", "G"):
        if name not in nets:
            continue
        if name != g_name and generator_config(nets[name], f"'{model.path}' {name}") != cfg:
            raise GenError(f"'{model.path}': G and G_ema have different layouts; the pickle is damaged")
        state = generator_state(nets[name], cfg, f"'{model.path}' {name}")
        # NVlabs' gen_images.py sets this buffer to move the camera; gen's camera is an input (--pan, --rotate,
        # the identity by default), so a run and its bundle draw alike: a pickle saved with it moved is reset
        if not torch.equal(state["synthesis.input.transform"], torch.eye(3)):
            state["synthesis.input.transform"] = torch.eye(3)
            moved = True
        tensors.update(ckpt.prefixed(state, name))
    if "G_ema" not in nets:
        found.lacks.append("G_ema (pictures come from G, the training generator)")
        tensors.update(ckpt.prefixed({k: v.clone() for k, v in ckpt.subdict(tensors, "G").items()}, "G_ema"))
    if moved:
        found.lacks.append("its stored camera (synthesis.input.transform was moved: reset to the identity; move "
                           "gen's with --pan and --rotate)")
    found.lacks.append("D (gen fine-tunes imported StyleGAN2 models only; not imported)")
    found.lacks.append("optimiser and augmentation state (NVlabs pickles hold none)")
    found.parameters = check_converted(cfg, tensors, model.path)
    return found, tensors


def generator_state(G: PersistentObject, cfg: Stylegan3Config, what: str) -> dict[str, torch.Tensor]:
    """Their generator's tensors -> our Generator3's state dict (filters checked against our plan)."""
    ours = Generator3(cfg).state_dict()
    take = Taker(G.tensors(), what, "stylegan3 generator")
    out = {}
    for i in range(cfg.mapping_layers):
        out[f"mapping.layers.{i}.weight"] = take(f"mapping.fc{i}.weight")
        out[f"mapping.layers.{i}.bias"] = take(f"mapping.fc{i}.bias")
    if cfg.c_dim:
        for name in ("weight", "bias"):
            out[f"mapping.embed.{name}"] = take(f"mapping.embed.{name}")
    out["mapping.w_avg"] = take("mapping.w_avg")
    for name in ("weight", "affine.weight", "affine.bias", "transform", "freqs", "phases"):
        out[f"synthesis.input.{name}"] = take(f"synthesis.input.{name}")
    names = sorted({m.group(1) for k in take.left if (m := re.match(r"synthesis\.(L(\d+)_\d+_\d+)\.", k))},
                   key=lambda n: int(n[1:].split("_")[0]))
    if len(names) != cfg.num_layers + 1:
        raise GenError(f"{what} has {len(names)} synthesis layers, not the {cfg.num_layers + 1} its arguments say; the "
                       "pickle is damaged")
    for i, theirs in enumerate(names):  # (shapes: base.check_converted, in one line)
        src, dst = f"synthesis.{theirs}.", f"synthesis.layers.{i}."
        for name in ("weight", "bias", "affine.weight", "affine.bias", "magnitude_ema"):
            out[dst + name] = take(src + name)
        for name in ("up_filter", "down_filter"):
            want = ours[dst + name]
            got = take(src + name) if src + name in take.left else torch.ones(1)  # None: one tap
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-6):
                raise GenError(f"{what}'s '{src + name}' is not the low-pass filter its layout calls for; gen cannot "
                               "represent it, so nothing was imported")
            out[dst + name] = got
    take.done()
    return out
