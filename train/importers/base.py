"""What every converter to a gen run shares: the report of what a file held, taking tensors by name so that
leftovers are refused, and the final check that the converted tensors load into our networks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gen.runtime.bundle import sha256_file
from gen.runtime.errors import GenError

from .. import checkpoint as ckpt
from ..config import ModelConfig, Stylegan3Config
from ..discriminator import Discriminator
from ..layers import lowpass_kernel
from ..sample import new_generator
from ..state_dicts import first_non_finite

FILTER = [1, 3, 3, 1]  # the one low-pass filter our networks run
FORMAT_NAMES = {"stylegan2-ada": "NVlabs stylegan2-ada-pytorch network pickle",
                "stylegan2-tf": "NVlabs StyleGAN2 TensorFlow network pickle",
                "rosinality": "rosinality/stylegan2-pytorch checkpoint",
                "stylegan3": "NVlabs stylegan3 network pickle"}


@dataclass
class Imported:
    """What `gen import` found in a file and wrote: for the user, and in the checkpoint's metadata."""

    source: Path
    format: str
    model: ModelConfig | Stylegan3Config
    img_channels: int = 3
    c_dim: int = 0
    num_fp16_res: int = 0
    parameters: dict[str, int] = field(default_factory=dict)  # network -> parameter count, as the file has it
    lacks: list[str] = field(default_factory=list)  # what the file does not hold (or we could not take)
    checkpoint: Path | None = None

    def rows(self) -> list[tuple[str, str]]:
        """(label, text) lines describing the model, for the command line."""
        m = self.model
        fp16 = (f"; NVlabs runs the top {self.num_fp16_res} resolutions in FP16 on GPUs, gen in FP32"
                if self.num_fp16_res else "")
        clamp = f"conv_clamp {m.conv_clamp:g}" if m.conv_clamp is not None else "no conv_clamp"
        if isinstance(m, Stylegan3Config):
            synthesis = (f"alias-free, config {m.variant[-1].upper()}, {m.num_layers} layers, channel_base "
                         f"{m.channel_base}, channel_max {m.channel_max}, {clamp}{fp16}")
        else:
            synthesis = f"skip architecture, channels min({m.channel_base} / res, {m.channel_max}), {clamp}{fp16}"
        return [
            ("format", f"{self.format} ({FORMAT_NAMES.get(self.format, 'unknown')})"),
            ("resolution", f"{m.resolution}x{m.resolution}, {self.img_channels} channels"),
            ("mapping", f"{m.mapping_layers} layers, z {m.z_dim} -> w {m.w_dim}, lr multiplier {m.mapping_lr_mul:g}"),
            ("synthesis", synthesis),
            ("classes", f"{self.c_dim} (gen sample RUN --class 0..{self.c_dim - 1})" if self.c_dim
             else "none (unconditional)"),
            ("parameters", ", ".join(f"{k} {v:,}" for k, v in self.parameters.items())),
            ("lacks", "; ".join(self.lacks) if self.lacks else "nothing"),
        ]

    def record(self) -> dict:
        """JSON for the checkpoint's metadata: where the weights came from."""
        return {"format": self.format, "file": self.source.name, "sha256": sha256_file(self.source),
                "c_dim": self.c_dim, "num_fp16_res": self.num_fp16_res, "parameters": self.parameters,
                "lacks": self.lacks}


def plain(value: Any) -> Any:
    """A number or list as a file stored it (numpy scalars and tuples included) -> plain Python."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


class Taker:
    """Takes tensors out of a network's by name, so that whatever is left over at the end can be refused."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], what: str, kind: str) -> None:
        self.left, self.what, self.kind = dict(tensors), what, kind

    def __call__(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The tensor `name` as float32 (reshaped to `shape` when given: their layout of our tensor)."""
        if name not in self.left:
            raise GenError(f"{self.what} has no tensor '{name}'; it is not a {self.kind} gen can read (or the file "
                           "is damaged)")
        t = self.left.pop(name)
        if not t.is_floating_point():
            raise GenError(f"{self.what}'s '{name}' is {t.dtype}, not floating point; the file is damaged")
        if shape is not None:
            if t.numel() != torch.Size(shape).numel():
                raise GenError(f"{self.what}'s '{name}' has shape {list(t.shape)}, not one gen can use as "
                               f"{list(shape)}; the file is damaged")
            t = t.reshape(shape)
        # a copy of its own: a file may share one tensor between networks, which safetensors cannot save
        return t.detach().to(torch.float32, copy=True).contiguous()

    def filters(self, suffix: str, gain_of=lambda name: 1.0) -> None:
        """The low-pass filter buffers (names ending in `suffix`): dropped, after checking each is the one we run
        (times its gain)."""
        for name in [n for n in self.left if n.endswith(suffix)]:
            t, want = self.left.pop(name), lowpass_kernel(FILTER) * gain_of(name)
            if t.shape != want.shape or not torch.allclose(t.float(), want):
                raise GenError(f"{self.what}'s '{name}' is not the [1, 3, 3, 1] low-pass filter gen runs; gen cannot "
                               "represent it, so nothing was imported")

    def done(self) -> None:
        if self.left:
            names = sorted(self.left)
            raise GenError(f"{self.what} holds {len(names)} tensor(s) gen has no place for ({', '.join(names[:3])}"
                           f"{', ...' if len(names) > 3 else ''}); gen cannot represent it, so nothing was imported")


def check_converted(cfg: ModelConfig | Stylegan3Config, tensors: dict[str, torch.Tensor], path: Path) -> dict[str, int]:
    """The converted tensors are finite and load into our networks: a shape that the config does not predict
    is one line. Returns each network's parameter count (ours: the same figure whatever the file's format)."""
    if (bad := first_non_finite(tensors)) is not None:
        raise GenError(f"'{path}': tensor '{bad}' holds NaN or infinite values; the model is damaged")
    nets = {"G_ema": new_generator(cfg)}
    if any(k.startswith("G.") for k in tensors):
        nets["G"] = nets["G_ema"]
    if any(k.startswith("D.") for k in tensors):
        nets["D"] = Discriminator(cfg)
    for name, net in nets.items():
        try:
            ckpt.load_module(net, ckpt.subdict(tensors, name), f"'{path}' {name}")
        except GenError as e:
            raise GenError(f"{str(e).split('; was it')[0]}; its arguments do not describe its tensors, so the "
                           "file is damaged") from None
    return {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
