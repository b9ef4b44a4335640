"""NVlabs' TensorFlow StyleGAN2 pickles ((G, D, Gs) networks) -> the stylegan2-ada-pytorch layout, then nvlabs.

stylegan2-ada-pytorch's legacy.py documents how their TensorFlow networks map onto their PyTorch ones: the
construction arguments (latent_size -> z_dim, fmap_base * 2 -> channel_base, ...) and every variable (dense
weights transposed, conv kernels [kh, kw, in, out] -> [out, in, kh, kw], up-sampling kernels flipped, modulation
biases + 1, noise{i} -> each layer's constant noise). The same mapping is done here on data: each network becomes
a PersistentObject under NVlabs' names, and nvlabs.convert does the rest. An argument or variable the mapping
does not know is refused in one line, as legacy.py refuses it.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from gen.runtime.errors import GenError

from . import nvlabs
from .base import Imported
from .pickles import ModelFile, PersistentObject, TFNetwork

MIN_VERSION = 4  # legacy.py: older pickles (StyleGAN1) are not StyleGAN2 networks

# (their argument, its default) per NVlabs keyword argument, as legacy.py reads them
G_ARGS = {"z_dim": ("latent_size", 512), "c_dim": ("label_size", 0), "w_dim": ("dlatent_size", 512),
          "img_resolution": ("resolution", 1024), "img_channels": ("num_channels", 3)}
MAPPING_ARGS = {"num_layers": ("mapping_layers", 8), "embed_features": ("label_fmaps", None),
                "layer_features": ("mapping_fmaps", None), "activation": ("mapping_nonlinearity", "lrelu"),
                "lr_multiplier": ("mapping_lrmul", 0.01), "w_avg_beta": ("w_avg_beta", 0.995)}
SYNTHESIS_ARGS = {"channel_max": ("fmap_max", 512), "num_fp16_res": ("num_fp16_res", 0),
                  "conv_clamp": ("conv_clamp", None), "architecture": ("architecture", "skip"),
                  "resample_filter": ("resample_kernel", [1, 3, 3, 1]), "use_noise": ("use_noise", True),
                  "activation": ("nonlinearity", "lrelu")}
G_IGNORED = {"truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure"}  # run-time options
D_ARGS = {"c_dim": ("label_size", 0), "img_resolution": ("resolution", 1024), "img_channels": ("num_channels", 3),
          "architecture": ("architecture", "resnet"), "channel_max": ("fmap_max", 512),
          "num_fp16_res": ("num_fp16_res", 0), "conv_clamp": ("conv_clamp", None)}
D_KNOWN = {"fmap_base", "nonlinearity", "resample_kernel", "freeze_layers", "mapping_fmaps", "mapping_layers",
           "mapping_lrmul", "mbstd_group_size", "mbstd_num_features", "structure"}


def _args(kw: dict, table: dict) -> dict:
    return {ours: default if kw.get(theirs) is None else kw[theirs] for ours, (theirs, default) in table.items()}


def _check_kwargs(net: TFNetwork, known: set[str], what: str) -> dict:
    if not isinstance(net.version, int) or net.version < MIN_VERSION:
        raise GenError(f"{what} is a TensorFlow network of version {net.version!r} (StyleGAN1?); gen imports "
                       f"StyleGAN2 networks (version {MIN_VERSION} and later)")
    kw = net.static_kwargs
    if unknown := sorted(str(k) for k in kw if k not in known):
        raise GenError(f"{what} was built with '{unknown[0]}', which gen does not know; gen cannot represent it, "
                       "so nothing was imported")
    return kw


class _Variables:
    """A network's TensorFlow variables, taken by name and re-laid out; whatever is left over can be refused."""

    def __init__(self, net: TFNetwork, what: str) -> None:
        self.left, self.what = net.arrays(), what

    def __call__(self, name: str, ndim: int | None = None) -> np.ndarray:
        if name not in self.left:
            raise GenError(f"{self.what} has no variable '{name}'; it is not a StyleGAN2 TensorFlow network gen can "
                           "read (or the pickle is damaged)")
        a = self.left.pop(name)
        if a.dtype.kind != "f":
            raise GenError(f"{self.what}'s '{name}' is {a.dtype}, not floating point; the pickle is damaged")
        if ndim is not None and a.ndim != ndim:
            layout = {2: "[in, out]", 4: "[kh, kw, in, out]"}.get(ndim, f"{ndim}-d")
            raise GenError(f"{self.what}'s '{name}' has shape {list(a.shape)}, not {layout}; the pickle is damaged")
        return a

    def done(self) -> None:
        if self.left:
            names = sorted(self.left)
            raise GenError(f"{self.what} holds {len(names)} variable(s) gen has no place for ({', '.join(names[:3])}"
                           f"{', ...' if len(names) > 3 else ''}); gen cannot represent it, so nothing was imported")


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # (ascontiguousarray makes 0-d 1-d)


def _conv(a: np.ndarray) -> torch.Tensor:  # [kh, kw, in, out] -> [out, in, kh, kw]
    return _tensor(a.transpose(3, 2, 0, 1))


def _dense(a: np.ndarray) -> torch.Tensor:  # [in, out] -> [out, in]
    return _tensor(a.T)


def generator(net: TFNetwork, what: str) -> PersistentObject:
    """A TensorFlow G or Gs as the stylegan2-ada-pytorch Generator legacy.py builds from it."""
    kw = _check_kwargs(net, {t for t, _ in [*G_ARGS.values(), *MAPPING_ARGS.values(), *SYNTHESIS_ARGS.values()]}
                       | {"fmap_base"} | G_IGNORED, what)
    args = _args(kw, G_ARGS)
    args["mapping_kwargs"] = _args(kw, MAPPING_ARGS)
    args["synthesis_kwargs"] = {**_args(kw, SYNTHESIS_ARGS), "channel_base": (kw.get("fmap_base") or 16384) * 2}
    var = _Variables(net, what)
    if any(re.fullmatch(r"synthesis/ToRGB_lod\d+/.*", k) for k in var.left):
        raise GenError(f"{what} has the 'orig' synthesis architecture (ToRGB_lod layers; gen has 'skip' only); gen "
                       "cannot represent it, so nothing was imported")
    var.left.pop("lod", None)  # G_main's level-of-detail input (progressive growing; 0 in StyleGAN2): unused
    t: dict[str, torch.Tensor] = {}
    if "dlatent_avg" in var.left:
        t["mapping.w_avg"] = _tensor(var("dlatent_avg"))
    if args["c_dim"]:
        t["mapping.embed.weight"] = _dense(var("mapping/LabelEmbed/weight", 2))
        t["mapping.embed.bias"] = _tensor(var("mapping/LabelEmbed/bias"))
    for i in range(int(args["mapping_kwargs"]["num_layers"])):
        t[f"mapping.fc{i}.weight"] = _dense(var(f"mapping/Dense{i}/weight", 2))
        t[f"mapping.fc{i}.bias"] = _tensor(var(f"mapping/Dense{i}/bias"))
    const = var("synthesis/4x4/Const/const")
    t["synthesis.b4.const"] = _tensor(const[0] if const.ndim == 4 else const)
    res = int(args["img_resolution"])
    if res < 4 or res & (res - 1):
        raise GenError(f"{what} has resolution {res}, not a power of two; the pickle is damaged")
    noise = 0
    for log2 in range(2, res.bit_length()):
        r = 2**log2
        for ours, theirs in ([("conv1", "Conv")] if r == 4 else [("conv0", "Conv0_up"), ("conv1", "Conv1")]):
            src, dst = f"synthesis/{r}x{r}/{theirs}/", f"synthesis.b{r}.{ours}."
            weight = var(src + "weight", 4)
            t[dst + "weight"] = _conv(weight[::-1, ::-1] if theirs == "Conv0_up" else weight)
            t[dst + "bias"] = _tensor(var(src + "bias"))
            t[dst + "affine.weight"] = _dense(var(src + "mod_weight", 2))
            t[dst + "affine.bias"] = _tensor(var(src + "mod_bias")) + 1
            if args["synthesis_kwargs"]["use_noise"]:
                t[dst + "noise_strength"] = _tensor(var(src + "noise_strength"))
                n = var(f"synthesis/noise{noise}")
                t[dst + "noise_const"] = _tensor(n[0, 0] if n.ndim == 4 else n)
            noise += 1
        src, dst = f"synthesis/{r}x{r}/ToRGB/", f"synthesis.b{r}.torgb."
        t[dst + "weight"] = _conv(var(src + "weight", 4))
        t[dst + "bias"] = _tensor(var(src + "bias"))
        t[dst + "affine.weight"] = _dense(var(src + "mod_weight", 2))
        t[dst + "affine.bias"] = _tensor(var(src + "mod_bias")) + 1
    var.done()
    return PersistentObject("Generator", "", {"_init_kwargs": args, "_parameters": t})


def discriminator(net: TFNetwork, what: str) -> PersistentObject:
    """A TensorFlow D as the stylegan2-ada-pytorch Discriminator legacy.py builds from it."""
    kw = _check_kwargs(net, {t for t, _ in D_ARGS.values()} | D_KNOWN, what)
    args = _args(kw, D_ARGS) | {"channel_base": (kw.get("fmap_base") or 16384) * 2}
    args["block_kwargs"] = {"activation": kw.get("nonlinearity") or "lrelu",
                            "resample_filter": kw.get("resample_kernel") or [1, 3, 3, 1]}
    # TensorFlow's D_stylegan2 groups 4 pictures unless told otherwise (legacy.py reads a missing value as None)
    args["epilogue_kwargs"] = {"mbstd_group_size": kw.get("mbstd_group_size") or 4,
                               "mbstd_num_channels": kw.get("mbstd_num_features") or 1,
                               "activation": kw.get("nonlinearity") or "lrelu"}
    unusable = PersistentObject("Discriminator", "", {"_init_kwargs": args})  # nvlabs says why, G is imported
    if args["c_dim"] or kw.get("mapping_layers") or args["architecture"] != "resnet":
        return unusable
    return PersistentObject("Discriminator", "", {"_init_kwargs": args, "_parameters": _d_tensors(net, args, what)})


def _d_tensors(net: TFNetwork, args: dict, what: str) -> dict[str, torch.Tensor]:
    var = _Variables(net, what)
    res = int(args["img_resolution"])
    t = {f"b{res}.fromrgb.weight": _conv(var(f"{res}x{res}/FromRGB/weight", 4)),
         f"b{res}.fromrgb.bias": _tensor(var(f"{res}x{res}/FromRGB/bias"))}
    r = res
    while r > 4:
        for ours, theirs in (("conv0", "Conv0"), ("conv1", "Conv1_down")):
            t[f"b{r}.{ours}.weight"] = _conv(var(f"{r}x{r}/{theirs}/weight", 4))
            t[f"b{r}.{ours}.bias"] = _tensor(var(f"{r}x{r}/{theirs}/bias"))
        t[f"b{r}.skip.weight"] = _conv(var(f"{r}x{r}/Skip/weight", 4))
        r //= 2
    t["b4.conv.weight"], t["b4.conv.bias"] = _conv(var("4x4/Conv/weight", 4)), _tensor(var("4x4/Conv/bias"))
    t["b4.fc.weight"], t["b4.fc.bias"] = _dense(var("4x4/Dense0/weight", 2)), _tensor(var("4x4/Dense0/bias"))
    t["b4.out.weight"], t["b4.out.bias"] = _dense(var("Output/weight", 2)), _tensor(var("Output/bias"))
    var.done()
    return t


def convert(model: ModelFile) -> tuple[Imported, dict[str, torch.Tensor]]:
    """A read TensorFlow ModelFile -> what was found and the checkpoint's tensors, through nvlabs.convert."""
    nets, path = model.networks, model.path
    unread = None
    try:
        pytorch = {"G": generator(nets["G"], f"'{path}' G"), "G_ema": generator(nets["Gs"], f"'{path}' Gs")}
        try:
            pytorch["D"] = discriminator(nets["D"], f"'{path}' D")
        except GenError as e:  # as for PyTorch pickles: the generators are imported, D is left out, and why
            unread = str(e).split("; ")[0]
    except (TypeError, ValueError, OverflowError) as e:  # arguments of the wrong kind: one line
        raise GenError(f"'{path}': the networks were built with arguments gen cannot read ({e})") from None
    found, tensors = nvlabs.convert(ModelFile(path, model.format, pytorch, model.extras))
    if unread:
        found.lacks = [f"a usable D (not imported: {unread})" if item.startswith("D (") else item
                       for item in found.lacks]
    return found, tensors
