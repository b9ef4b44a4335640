"""stylegan2-ada-pytorch networks -> a gen run folder (`gen import`).

pickles.read_model_file reads the pickle as data; here the generator's construction arguments become a
ModelConfig and its tensors are renamed into our Generator's (and D's) state dicts, then written as an ordinary
checkpoint that `gen sample`, `gen export`, `gen walk` and `gen mix` take. The reference (train/stylegan.py) runs
their ops (up-sampling conv, ToRGB skips, noise, conv_clamp, truncation), so the pictures are theirs.

Their names -> ours: mapping.fc{i} -> mapping.layers.{i}; synthesis.b4.const -> synthesis.const; the convs
b4.conv1, b8.conv0, b8.conv1, b16.conv0, ... -> synthesis.layers.0, 1, 2, ...; b{4*2^k}.torgb -> synthesis.torgbs.k;
noise_strength -> noise.strength; noise_const [R, R] -> noise.noise_const [1, 1, R, R]; a class-conditional
model's label embedding mapping.embed keeps its name. Their up-sampling layers
(conv0) hold convolution kernels (NVlabs runs them with flip_weight=False), ours correlation kernels as
F.conv2d takes everywhere: those weights are flipped, which is exact. D: b{R}.fromrgb -> from_rgb, b{res}.conv0,
conv1, skip -> blocks.{i}, b4.conv, fc, out -> conv, fc, out.

Anything a file holds that our networks cannot compute (another architecture, activation, filter, kernel,
StyleGAN3, a tensor with no place in ours) is refused in one line naming it, before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gen.runtime.errors import GenError

from .. import checkpoint as ckpt
from ..config import ModelConfig, to_json
from .base import FILTER, Imported, Taker, check_converted, plain
from .pickles import ModelFile, PersistentObject

# NVlabs' constructor defaults (training/networks.py), for arguments a pickle does not record
MAPPING_DEFAULTS = dict(num_layers=8, embed_features=None, layer_features=None, activation="lrelu",
                        lr_multiplier=0.01, w_avg_beta=0.995)
SYNTHESIS_DEFAULTS = dict(channel_base=32768, channel_max=512, num_fp16_res=0, architecture="skip",
                          resample_filter=[1, 3, 3, 1], conv_clamp=None, kernel_size=3, use_noise=True,
                          activation="lrelu")
D_DEFAULTS = dict(architecture="resnet", channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None)
D_EPILOGUE_DEFAULTS = dict(mbstd_group_size=4, mbstd_num_channels=1, activation="lrelu")


def _kwargs(obj: PersistentObject, key: str, defaults: dict) -> dict:
    given = obj.init_kwargs.get(key) or {}
    if not isinstance(given, Mapping):
        raise GenError(f"the generator's {key} are not a dict; the pickle is damaged")
    return {**defaults, **given}


def generator_config(G: PersistentObject, what: str = "the generator") -> tuple[ModelConfig, dict]:
    """Our ModelConfig for an NVlabs StyleGAN2 generator, from the arguments it was built with; one GenError
    naming the first thing our Generator cannot compute. Also returns what the config does not hold (image
    channels, FP16 layers, whether it has noise inputs and a w_avg) and c_dim again."""
    kw = G.init_kwargs
    synthesis = G.modules().get("synthesis")
    if synthesis is not None and "b4" not in synthesis.modules():
        layers = ", ".join(list(synthesis.modules())[:3])
        raise GenError(f"{what} is not a StyleGAN2 generator (its synthesis has {layers}, ...: StyleGAN3?); gen "
                       "imports stylegan2-ada-pytorch StyleGAN2 models")
    missing = [k for k in ("z_dim", "w_dim", "img_resolution") if k not in kw]
    if G.class_name != "Generator" or missing:
        raise GenError(f"{what} is a '{G.class_name}' without {', '.join(missing) or 'a known layout'}; gen imports "
                       "stylegan2-ada-pytorch Generators")
    m = _kwargs(G, "mapping_kwargs", MAPPING_DEFAULTS)
    s = _kwargs(G, "synthesis_kwargs", SYNTHESIS_DEFAULTS)
    try:
        c_dim, img_channels = int(kw.get("c_dim", 0) or 0), int(kw.get("img_channels", 3))
        fp16_res = int(s["num_fp16_res"] or 0)
    except (TypeError, ValueError) as e:
        raise GenError(f"{what} was built with arguments gen cannot read ({e})") from None
    refusals = [
        (s["architecture"] != "skip", f"the '{s['architecture']}' synthesis architecture (gen has 'skip' only)"),
        (img_channels != 3, f"{img_channels} image channels (gen draws RGB)"),
        (m["activation"] != "lrelu" or s["activation"] != "lrelu",
         f"the '{m['activation']}'/'{s['activation']}' activations (gen has lrelu only)"),
        (plain(s["resample_filter"]) != FILTER, f"the resampling filter {plain(s['resample_filter'])} "
                                                 f"(gen has {FILTER} only)"),
        (s["kernel_size"] != 3, f"{s['kernel_size']}x{s['kernel_size']} synthesis convs (gen has 3x3)"),
        (m["layer_features"] not in (None, kw["w_dim"]), f"{m['layer_features']} mapping features (gen has w_dim)"),
        (c_dim > 0 and m["embed_features"] not in (None, kw["w_dim"]),
         f"{m['embed_features']} label-embedding features (gen has w_dim)"),
    ]
    for refused, what_ in refusals:
        if refused:
            raise GenError(f"{what} uses {what_}; gen cannot represent it, so nothing was imported")
    clamp = s["conv_clamp"]
    try:
        cfg = ModelConfig(resolution=int(kw["img_resolution"]), variant="stylegan2", z_dim=int(kw["z_dim"]),
                          w_dim=int(kw["w_dim"]), mapping_layers=int(m["num_layers"]),
                          mapping_lr_mul=float(m["lr_multiplier"]), channel_base=int(s["channel_base"]),
                          channel_max=int(s["channel_max"]), conv_clamp=None if clamp is None else float(clamp),
                          c_dim=c_dim)
    except GenError as e:
        raise GenError(f"{what}: {e}; gen cannot represent it, so nothing was imported") from None
    except (TypeError, ValueError) as e:
        raise GenError(f"{what} was built with arguments gen cannot read ({e})") from None
    return cfg, {"c_dim": c_dim, "img_channels": img_channels, "num_fp16_res": fp16_res,
                 "use_noise": bool(s["use_noise"]), "w_avg": m["w_avg_beta"] is not None}


def _synthesis_layers(cfg: ModelConfig) -> list[tuple[str, bool]]:
    """Their conv layers in our order, with whether each up-samples."""
    names = [("b4.conv1", False)]
    for log2 in range(3, cfg.log2_res + 1):
        names += [(f"b{2**log2}.conv0", True), (f"b{2**log2}.conv1", False)]
    return names


def generator_state(tensors: Mapping[str, torch.Tensor], cfg: ModelConfig, what: str = "the generator",
                    use_noise: bool = True) -> dict[str, torch.Tensor]:
    """An NVlabs StyleGAN2 generator's tensors (by their dotted names) -> our Generator's state dict."""
    take = Taker(tensors, what, "stylegan2-ada-pytorch network")
    out = {}
    for i in range(cfg.mapping_layers):
        out[f"mapping.layers.{i}.weight"] = take(f"mapping.fc{i}.weight")
        out[f"mapping.layers.{i}.bias"] = take(f"mapping.fc{i}.bias")
    if cfg.c_dim:
        for name in ("weight", "bias"):  # the label embedding
            out[f"mapping.embed.{name}"] = take(f"mapping.embed.{name}")
    out["mapping.w_avg"] = take("mapping.w_avg") if "mapping.w_avg" in take.left else torch.zeros(cfg.w_dim)
    out["synthesis.const"] = take("synthesis.b4.const")
    for i, (name, up) in enumerate(_synthesis_layers(cfg)):
        theirs, ours = f"synthesis.{name}.", f"synthesis.layers.{i}."
        weight = take(theirs + "weight")
        out[ours + "weight"] = weight.flip([2, 3]) if up else weight  # their convolution -> our correlation
        for a, b in (("affine.weight", "affine.weight"), ("affine.bias", "affine.bias"), ("bias", "bias")):
            out[ours + b] = take(theirs + a)
        res = 2 ** (2 + (i + 1) // 2)
        if use_noise:
            out[ours + "noise.strength"] = take(theirs + "noise_strength")
            out[ours + "noise.noise_const"] = take(theirs + "noise_const").reshape(1, 1, res, res)
        else:  # no noise input: a zero strength adds nothing
            out[ours + "noise.strength"] = torch.zeros([])
            out[ours + "noise.noise_const"] = torch.zeros(1, 1, res, res)
    for k in range(cfg.log2_res - 1):
        theirs, ours = f"synthesis.b{4 * 2**k}.torgb.", f"synthesis.torgbs.{k}."
        for name in ("weight", "bias", "affine.weight", "affine.bias"):
            out[ours + name] = take(theirs + name)
    take.filters("resample_filter")
    take.done()
    return out


def discriminator_state(tensors: Mapping[str, torch.Tensor], cfg: ModelConfig,
                        what: str = "the discriminator") -> dict[str, torch.Tensor]:
    """An NVlabs 'resnet' discriminator's tensors -> our Discriminator's state dict."""
    take = Taker(tensors, what, "stylegan2-ada-pytorch network")
    r = cfg.resolution
    out = {"from_rgb.weight": take(f"b{r}.fromrgb.weight"), "from_rgb.bias": take(f"b{r}.fromrgb.bias")}
    for i, log2 in enumerate(range(cfg.log2_res, 2, -1)):
        theirs, ours = f"b{2**log2}.", f"blocks.{i}."
        for name in ("conv0.weight", "conv0.bias", "conv1.weight", "conv1.bias", "skip.weight"):
            out[ours + name] = take(theirs + name)
    for name in ("conv", "fc", "out"):
        out[f"{name}.weight"], out[f"{name}.bias"] = take(f"b4.{name}.weight"), take(f"b4.{name}.bias")
    take.filters("resample_filter")
    take.done()
    return out


def discriminator_config(D: PersistentObject, cfg: ModelConfig) -> tuple[ModelConfig | None, str]:
    """The model config with D's minibatch-stddev group, or None and why our Discriminator cannot be it."""
    kw = D.init_kwargs
    d = {**D_DEFAULTS, **{k: kw[k] for k in D_DEFAULTS if k in kw}}
    e = kw.get("epilogue_kwargs") or {}
    e = {**D_EPILOGUE_DEFAULTS, **e} if isinstance(e, Mapping) else e
    block = kw.get("block_kwargs") or {}
    if not isinstance(e, Mapping) or not isinstance(block, Mapping):
        return None, "its arguments are not dicts"
    group = e["mbstd_group_size"]
    checks = [
        (D.class_name != "Discriminator", f"it is a '{D.class_name}'"),
        (kw.get("c_dim", 0) not in (0, None), "it is class-conditional"),
        (kw.get("img_resolution", cfg.resolution) != cfg.resolution, "its resolution is not G's"),
        (d["architecture"] != "resnet", f"its architecture is '{d['architecture']}' (gen's D is 'resnet')"),
        ((d["channel_base"], d["channel_max"]) != (cfg.channel_base, cfg.channel_max), "its channels are not G's"),
        (plain(d["conv_clamp"]) != cfg.conv_clamp, "its conv_clamp is not G's"),
        (e["mbstd_num_channels"] != 1, f"its minibatch stddev has {e['mbstd_num_channels']} channels (gen's has 1)"),
        (e["activation"] != "lrelu" or block.get("activation", "lrelu") != "lrelu", "its activation is not lrelu"),
        (plain(block.get("resample_filter", FILTER)) != FILTER, "its resampling filter is not [1, 3, 3, 1]"),
        (not isinstance(group, int) or group < 1, f"its minibatch stddev groups {group} pictures (gen: a number)"),
    ]
    for bad, why in checks:
        if bad:
            return None, why
    try:
        return ModelConfig(**{**to_json(cfg), "mbstd_group": group}), ""
    except GenError as e:  # (an absurd group size): D is left out, G imported
        return None, str(e)


def convert(model: ModelFile) -> tuple[Imported, dict[str, torch.Tensor]]:
    """A read stylegan2-ada ModelFile -> what was found and the checkpoint's tensors (G_ema, G, D prefixed)."""
    nets = model.networks
    g_name = "G_ema" if "G_ema" in nets else "G"
    cfg, more = generator_config(nets[g_name], f"'{model.path}' {g_name}")
    found = Imported(model.path, model.format, cfg, more["img_channels"], more["c_dim"], more["num_fp16_res"])
    tensors: dict[str, torch.Tensor] = {}
    for name in ("G_ema", "G"):
        if name not in nets:
            continue
        if name != g_name:  # G: the same layout as G_ema, or nothing to fine-tune from
            other, _ = generator_config(nets[name], f"'{model.path}' {name}")
            if other != cfg:
                raise GenError(f"'{model.path}': G and G_ema have different layouts; the pickle is damaged")
        state = generator_state(nets[name].tensors(), cfg, f"'{model.path}' {name}", more["use_noise"])
        tensors.update(ckpt.prefixed(state, name))
    if "G_ema" not in nets:
        found.lacks.append("G_ema (pictures come from G, the training generator)")
        tensors.update(ckpt.prefixed({k: v.clone() for k, v in ckpt.subdict(tensors, "G").items()}, "G_ema"))
    elif "G" not in nets:
        found.lacks.append("G (the training generator; fine-tuning starts from G_ema)")
    if "D" in nets:
        d_cfg, why = discriminator_config(nets["D"], cfg)
        if d_cfg is None:
            found.lacks.append(f"a usable D ({why}; not imported)")
        else:
            cfg = found.model = d_cfg
            tensors.update(ckpt.prefixed(discriminator_state(nets["D"].tensors(), cfg, f"'{model.path}' D"), "D"))
    else:
        found.lacks.append("D (needed to fine-tune)")
    if not more["use_noise"]:
        found.lacks.append("noise inputs (built without them: noise modes draw the same)")
    if not more["w_avg"]:
        found.lacks.append("w_avg (truncation pulls towards w = 0)")
    found.lacks.append("optimiser and augmentation state (NVlabs pickles hold none)")
    found.parameters = check_converted(cfg, tensors, model.path)
    return found, tensors
