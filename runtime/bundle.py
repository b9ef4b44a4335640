"""The bundle: the contract between `gen export` and the runtime. This docstring is its document.

A bundle is a folder::

    manifest.json        this schema (msgspec structs below), format "gen-bundle", version 3
    *.onnx               the graphs named in manifest.graphs
    golden.npz           inputs and PyTorch reference outputs, for `gen verify` (never pickled)
    *.engine             TensorRT engines, when exported with --target trt (listed in ``engines``)
    timing.*.cache       TensorRT's timing cache for one GPU and TensorRT version, reused by later builds
    trt-cache/           engines built on first use on a device (not listed in files; never trusted
                         without their record, see gen.runtime.engines.trt_plan)

manifest.json fields:

- ``format`` = "gen-bundle", ``format_version`` (an integer; this runtime reads ``MIN_FORMAT_VERSION``
  to ``FORMAT_VERSION``), ``gen_version`` (the gen that wrote it), ``created`` (UTC, ISO 8601),
  ``license`` (of the weights).
- ``kind``: "stylegan" or "dream"; the matching ``stylegan`` / ``dream`` section is present.
- ``files``: every file of the bundle but the manifest -> sha256 and size in bytes.
- ``graphs``: name -> file, opset, inputs and outputs (name, dtype, shape; a string in a shape is a
  named dynamic axis such as "batch", "height").
- ``preprocessing``: how pixels map to graph values: ``value_range`` of the graph's image tensor for
  0..255 pixels mapped linearly (StyleGAN: output [-1, 1]; dreaming: the input range), then optional
  per-channel ``mean``/``std``; layout NCHW, RGB.
- ``stylegan``: variant, resolution, z_dim, w_dim, num_ws, ``w_avg`` (for truncation, done by the
  runtime: w = w_avg + psi * (w - w_avg) for the first ``cutoff`` styles), default psi, the noise
  inputs and their shapes, and ``c_dim``: the classes of a class-conditional model (optional; 0, the
  default, is unconditional).
  Graphs: ``mapping`` (z [batch, z_dim], and when c_dim > 0 the class label c [batch, c_dim], float32
  one-hot as ``gen.runtime.latents.class_vector`` makes it -> w [batch, w_dim]) and ``synthesis`` (ws
  [batch, num_ws, w_dim], ``const_noise`` [1] and one ``noise_i`` [batch, 1, r, r] per layer -> img
  [batch, 3, R, R]).
  The layer noise is ``noise_i + const_noise * baked_const_noise_i``: const mode feeds 1 and zeros,
  random mode feeds 0 and random noise, none feeds 0 and zeros.
  StyleGAN3 (variant "stylegan3-t" or "stylegan3-r", alias-free) has no noise: ``noise_inputs`` is empty
  and ``synthesis`` takes ws and ``transform`` [batch, 3, 3], the camera: the inverse of the affine
  transform (rotation, then translation, in picture widths) that moves the picture, as NVlabs'
  ``synthesis.input.transform`` (``gen.runtime.stylegan.generator.camera_transform``; identity: the plain
  picture). Its golden pictures are all constant-noise; at least one has a ``camera`` (9 numbers, row by
  row, the last row 0, 0, 1) moved from the identity by ``MIN_CAMERA_MOVE`` (0.05) or more in some entry,
  so that the transform input is checked with the graphs.
- ``dream``: backbone, layers and weights, objective, and the value range the graphs expect.
  Graphs: ``features`` (image -> chosen layers) and ``dream_grad`` (image [1, 3, height, width] ->
  grad of the same shape and the scalar objective).
- ``golden``: the npz file, ``cases`` (graph, inputs and expected outputs by npz key, a note; every
  graph has at least one), ``pictures`` (stylegan bundles, at least one: seeds, and the npz keys of
  PyTorch's truncated styles at the default psi and its uint8 pictures with constant noise, or with
  ``noise`` "random" the seeds' own random noise (``gen.runtime.latents.seed_noise``), and for a
  class-conditional model the ``class_index`` they were drawn with (present exactly when c_dim > 0); `gen
  verify` draws the same seeds (and class) through the runtime's own path, so that ``w_avg``,
  ``default_psi``, ``value_range``, the order of ``noise_inputs`` and the class label are checked with the
  graphs) and ``tolerances`` per graph (``max_abs``, ``rel_l2`` and/or ``psnr_db``: PSNR in dB over the
  reference's own value range).
  ``<graph>_fp16`` names the tolerance for any FP16 computation of ``<graph>``: the optional
  ``synthesis_fp16`` graph (FP16 weights and arithmetic, FP32 inputs and outputs, checked on the
  ``synthesis`` cases) and FP16 TensorRT engines of ``synthesis``.
  A dream bundle's golden images are [0, 1] RGB pictures and its gradients are with respect to them:
  `gen verify` maps them through ``preprocessing`` exactly as `gen dream` does, so that those numbers
  are checked too; and ``dreams`` (dream bundles, at least one): short dreams of golden images, computed
  by the PyTorch reference with the backbone's own smallest side, that `gen verify` dreams again through
  the runtime's loop with ``dream.min_size`` (export makes two: one whose smaller octave is exactly
  min_size, one whose smaller octave is one pixel short and skipped). Their octaves must include sides of
  exactly min_size and min_size - 1, whatever min_size the manifest says: then any other value changes one
  of them, and no dream can be dropped to hide it.
  (Format 2 added ``pictures`` and this reading; format 3 the random-noise pictures and ``dreams``,
  required whatever ``format_version`` a manifest claims, so older bundles are re-exported.
  ``stylegan.c_dim`` and ``class_index`` are optional within format 3: a manifest without them is
  unconditional.)
- ``engines`` (optional): TensorRT engines, one record each: the graph it was built from and that
  graph's sha256, file, GPU name, compute capability ("8.7"), TensorRT version, precision, the
  optimisation profile per dynamic input (min/opt/max shapes), and whether it was built
  version-compatible or hardware-compatible (Ampere and later). An engine runs only on the GPU and
  TensorRT it was built for; ``gen.runtime.engines.trt_plan`` picks the one that fits or says why none does.

Bounds (a manifest is data from anywhere; each bound is far beyond what ``gen export`` writes):

- manifest.json is a regular file of at most ``MAX_MANIFEST_BYTES`` (4 MiB), checked before it is read
  (never a device, FIFO or huge file); JSON nested more than ``MAX_JSON_DEPTH`` (32) deep or with integers
  of thousands of digits is refused. A folder with a manifest.json (``has_manifest``) is a bundle to
  commands that also take checkpoints, so its own error is shown; ``is_bundle`` says whether it is a readable gen
  bundle.
- Shapes: rank <= 8; a fixed dimension is an integer 1..65536, a dynamic one an identifier-like name.
  ``z_dim``, ``w_dim`` <= 4096, ``num_ws`` <= 64, ``c_dim`` 0..10000, at least one noise input (every
  StyleGAN2 and 1 layer has noise; StyleGAN3 none), noise [batch, 1, h, w] with h, w <= resolution,
  mapping inputs exactly z [batch, z_dim] and (c_dim > 0) c [batch, c_dim], mapping w [batch, w_dim],
  synthesis img [batch, 3, resolution, resolution]; a picture's ``class_index`` in 0..c_dim-1, its
  ``camera``'s numbers within +-10^4.
- Numbers that feed pictures are finite: ``w_avg``, ``value_range`` (low < high), ``mean``, ``std``
  (3 values each, std >= 1e-3) within +-1e4; ``default_psi`` in [-2, 2]. ``dream.objective`` is a
  description whose known keys have their types (``terms`` a list of strings, ``class`` an integer);
  ``dream.min_size`` is an integer 1..256.
- Verification cannot be switched off: every graph has golden cases, every case at least one output,
  every tolerance at least one bound, and no bound looser than the runtime's: ``rel_l2`` <= 1e-2,
  ``psnr_db`` >= 30, ``max_abs`` <= 1% of the width of ``value_range``, the units of pictures; every
  other output (w, a dream's features, objective and gradient) has a scale of its own, so its tolerance
  needs ``rel_l2`` or ``psnr_db`` (see ``MAX_REL_L2`` and the constants beside it for why). Golden arrays
  have their tensor's declared dtype and fixed sizes, checked from their npy headers before they are
  read; only those the manifest names are read, at most ``MAX_GOLDEN_BYTES`` in all.
- When a graph is opened, onnxruntime's own view of it must agree with the manifest: names, dtypes,
  ranks and fixed sizes of every input and output (``gen.runtime.engines.ort``); what a graph returns
  is checked where the runtime relies on it (w, img, the dream gradient and its scalar objective: their
  shapes, and finite values). An error of onnxruntime while a graph runs is one line.
- A graph holds all its tensors (no ONNX external data, which no hash covers) and no control flow (Loop,
  Scan, If, or any node with a subgraph: `gen export` writes none, and a loop can run without end), and an
  engine loads the very bytes it checked against ``files`` (``gen.runtime.engines.onnx_file``).

Validation on load (``load_bundle``) reports the first schema problem, with where it is in the manifest, or
every file problem, one line each, with what to do about it. This module reads and checks bundles and runs no
engine; ``gen.export.writer`` writes them and holds each new one to its golden data before it replaces anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import types
import typing
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from msgspec import Meta, field

from .errors import GenError
from .latents import DEFAULT_PSI

FORMAT = "gen-bundle"
FORMAT_VERSION = 3  # 2: golden.pictures, and dream golden data read through preprocessing; 3: random-noise pictures
MIN_FORMAT_VERSION = 3  # format 2 lacks the checks of random noise and of dream.min_size: re-exported
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"

# Bounds the runtime owns: a manifest is data from anywhere and must not make a device hang, eat its memory or
# switch verification off. Each is far beyond what `gen export` writes (see the docstring's "Bounds").
MAX_MANIFEST_BYTES = 4 << 20  # 4 MiB; shipped manifests are ~20 KB, an engine record adds ~1 KB
MAX_JSON_DEPTH = 32  # shipped manifests nest 6 deep
MAX_DIM = 1 << 16  # a fixed tensor dimension (an image side, a channel count)
MAX_RANK = 8
MAX_LATENT = 4096  # z_dim and w_dim: StyleGAN uses 512
MAX_NUM_WS = 64  # 18 at 1024 px
MAX_CLASSES = 10_000  # c_dim of a class-conditional StyleGAN: ImageNet has 1,000; as many as training allows
MAX_ABS_VALUE = 1e4  # value ranges, mean, std, w_avg: O(1) in practice, 255 for 8-bit ranges
PSI_RANGE = (-2.0, 2.0)  # the default truncation psi: 0 = the average picture, 1 = none; beyond 2 is noise
# The smallest image side a dream backbone takes: 32 (EfficientNet-Lite0), 75 (Inception v3). More than half the
# default tile (512) would refuse every dream with default settings, and in the user's --tile's name.
MAX_MIN_SIZE = 256
# All golden arrays a manifest names, by their npy headers: golden.npz is compressed, so a small file can declare
# gigabytes. A 1024 px StyleGAN's golden data are ~0.4 GB, a dream bundle's a few MB.
MAX_GOLDEN_BYTES = 1 << 30
# Verification bounds: a manifest may ask for tighter tolerances, never looser ones.
# rel_l2 <= 1e-2: FP32 engines agree with PyTorch to ~1e-6 and FP16 to ~1e-3, while a wrong op or weight is off
# by 1e-1 and more. psnr_db >= 30: an RMS error of 3% of the value range (~8 levels of 8 bits); FP16 synthesis
# measures ~80 dB, a wrong op < 30 dB. max_abs <= 1% of the width of preprocessing.value_range (~2.5 levels of
# 8 bits on a picture); the golden data's other tensors (w, features, gradients) are of that size or smaller.
MAX_REL_L2 = 1e-2
MIN_PSNR_DB = 30.0
MAX_ABS_OF_RANGE = 1e-2
# The tolerances whose outputs are pictures, in value_range's units; any other (w, a dream's features, objective and
# gradient) has a scale of its own: dream-inception's gradients are < 0.005, inside any max_abs of 0.01.
PICTURE_TOLERANCES = ("synthesis", "synthesis_fp16")


class BundleError(GenError):
    """A bundle that cannot be used; the message has one line per problem."""


# The schema is msgspec structs: checked in C when a manifest is read (a few microseconds), and imported in a
# few milliseconds, which matters to a command that draws one picture (pydantic took ~0.2 s of `gen sample`).
# Structs built in code are not checked: `gen export` checks each manifest by reading it back (`parse`).
class Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


# A manifest's numbers are finite: read_manifest refuses NaN and infinities, so bounds alone say the rest.
Value = Annotated[float, Meta(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
Dim = Annotated[int, Meta(ge=1, le=MAX_DIM)]
Axis = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]  # a named dynamic axis
Name = Annotated[str, Meta(min_length=1, max_length=256)]
Std = Annotated[float, Meta(ge=1e-3, le=MAX_ABS_VALUE)]


class TensorSpec(Strict):
    name: Name
    dtype: Literal["float32", "float16", "int64", "int32"]
    shape: Annotated[list[Dim | Axis], Meta(max_length=MAX_RANK)]


class GraphSpec(Strict):
    file: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]+\.onnx$")]
    opset: Annotated[int, Meta(ge=7, le=100)]
    inputs: Annotated[list[TensorSpec], Meta(min_length=1, max_length=256)]
    outputs: Annotated[list[TensorSpec], Meta(min_length=1, max_length=256)]


Sha256 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]


class FileEntry(Strict):
    sha256: Sha256
    size: Annotated[int, Meta(ge=0, le=1 << 40)]


class Preprocessing(Strict):
    value_range: tuple[Value, Value]
    mean: Annotated[list[Value], Meta(min_length=3, max_length=3)] | None = None  # per RGB channel
    std: Annotated[list[Std], Meta(min_length=3, max_length=3)] | None = None
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"

    def __post_init__(self):
        if not self.value_range[0] < self.value_range[1]:
            raise ValueError(f"value_range {list(self.value_range)} must run from low to high")

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset), each [1, 3, 1, 1] float32: graph value = scale * x + offset for x in [0, 1] RGB."""
        lo, hi = self.value_range
        mean = np.asarray(self.mean if self.mean is not None else [0.0] * 3, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std if self.std is not None else [1.0] * 3, np.float32).reshape(1, 3, 1, 1)
        return (hi - lo) / std, (lo - mean) / std


STYLEGAN3 = ("stylegan3-t", "stylegan3-r")  # alias-free: no noise; a camera transform instead
IDENTITY_CAMERA = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
MIN_CAMERA_MOVE = 0.05  # a golden picture's moved camera differs from the identity by this much somewhere


def camera_moved(camera: list[float] | None) -> bool:
    """Whether a golden picture's camera is moved far enough that a graph ignoring its transform input would draw
    another picture (export: pan 0.3, -0.2 and 25 degrees)."""
    return camera is not None and max(abs(a - b) for a, b in zip(camera[:6], IDENTITY_CAMERA)) >= MIN_CAMERA_MOVE


class StyleGANMeta(Strict):
    variant: Literal["stylegan2", "stylegan1", "stylegan3-t", "stylegan3-r"]
    resolution: Annotated[int, Meta(ge=8, le=1024)]
    z_dim: Annotated[int, Meta(ge=1, le=MAX_LATENT)]
    w_dim: Annotated[int, Meta(ge=1, le=MAX_LATENT)]
    num_ws: Annotated[int, Meta(ge=1, le=MAX_NUM_WS)]
    w_avg: Annotated[list[Value], Meta(max_length=MAX_LATENT)]
    # every layer's noise (StyleGAN2 and 1, at least one); StyleGAN3 has none
    noise_inputs: Annotated[list[Name], Meta(max_length=2 * MAX_NUM_WS)]
    default_psi: Annotated[float, Meta(ge=PSI_RANGE[0], le=PSI_RANGE[1])] = DEFAULT_PSI
    c_dim: Annotated[int, Meta(ge=0, le=MAX_CLASSES)] = 0  # classes; 0 (format 3 without it): unconditional

    @property
    def alias_free(self) -> bool:
        """StyleGAN3: synthesis takes ws and the camera `transform` [batch, 3, 3], no noise."""
        return self.variant in STYLEGAN3

    def __post_init__(self):
        if len(self.w_avg) != self.w_dim:
            raise ValueError(f"w_avg has {len(self.w_avg)} values but w_dim is {self.w_dim}")
        if self.alias_free and self.noise_inputs:
            raise ValueError(f"noise_inputs must be empty: {self.variant} has no noise")
        if not self.alias_free and not self.noise_inputs:
            raise ValueError(f"noise_inputs is empty, but every {self.variant} layer has noise")

    def check_graphs(self, graphs: dict[str, GraphSpec]) -> None:
        """The graph signatures the runtime relies on: names, and the static sizes of z, w, ws, noise, the camera
        transform and img."""
        mapping, synthesis = graphs["mapping"], graphs["synthesis"]
        ins = {t.name: t.shape for t in synthesis.inputs}
        extra = ["transform"] if self.alias_free else ["const_noise", *self.noise_inputs]
        want = {"ws", *extra}
        if set(ins) != want or len(want) != 1 + len(extra):
            raise ValueError(f"synthesis inputs {sorted(ins)} do not match ws, "
                             + ("transform" if self.alias_free else "const_noise and noise_inputs"))
        if len(ins["ws"]) != 3 or ins["ws"][1:] != [self.num_ws, self.w_dim]:
            raise ValueError(f"synthesis input ws has shape {ins['ws']}, not [batch, {self.num_ws}, {self.w_dim}]")
        if self.alias_free and (len(ins["transform"]) != 3 or ins["transform"][1:] != [3, 3]):
            raise ValueError(f"synthesis input transform has shape {ins['transform']}, not [batch, 3, 3]")
        if not self.alias_free and ins["const_noise"] != [1]:
            raise ValueError(f"synthesis input const_noise has shape {ins['const_noise']}, not [1]")
        r = self.resolution
        for name in self.noise_inputs:  # a layer's noise is at most the picture's size
            s = ins[name]
            if len(s) != 4 or s[1] != 1 or not all(isinstance(d, int) and d <= r for d in s[2:]):
                raise ValueError(f"noise input {name} must have shape [batch, 1, h, w] with h, w <= {r}, not {s}")
        ins = {t.name: t.shape for t in mapping.inputs}
        want = {"z": self.z_dim} | ({"c": self.c_dim} if self.c_dim else {})  # the class label beside z, if any
        if set(ins) != set(want) or any(len(ins[k]) != 2 or ins[k][1:] != [d] for k, d in want.items()):
            takes = " and ".join(f"{k} [batch, {d}]" for k, d in want.items())
            raise ValueError(f"mapping must take {takes} (stylegan.c_dim is {self.c_dim}), not {ins}")
        w = {t.name: t.shape for t in mapping.outputs}
        if "w" not in w or len(w["w"]) != 2 or w["w"][1:] != [self.w_dim]:
            raise ValueError(f"mapping must output w [batch, {self.w_dim}], not {w}")
        img = {t.name: t.shape for t in synthesis.outputs}
        if "img" not in img or len(img["img"]) != 4 or img["img"][1:] != [3, r, r]:
            raise ValueError(f"synthesis must output img [batch, 3, {r}, {r}], not {img}")


class DreamMeta(Strict):
    backbone: str
    layers: dict[str, Value]
    objective: dict[str, Any]  # a description: type, terms, value, class, guide (see export.dream)
    classes: Annotated[int, Meta(ge=1, le=1 << 20)] | None = None
    min_size: Annotated[int, Meta(ge=1, le=MAX_MIN_SIZE)] = 32  # the smallest image side it takes

    def __post_init__(self):
        o = self.objective
        kinds = {"type": str, "terms": list, "value": str, "class": int, "guide": str}
        for key, kind in kinds.items():
            v = o.get(key)
            if key in o and (not isinstance(v, kind) or isinstance(v, bool)):
                raise ValueError(f"objective.{key} must be a {kind.__name__}")
        if not all(isinstance(t, str) for t in o.get("terms", [])):
            raise ValueError("objective.terms must be a list of strings")


class Tolerance(Strict):
    """At least one bound; each no looser than the runtime's maxima (MAX_REL_L2, MIN_PSNR_DB, MAX_ABS_OF_RANGE,
    the last checked against the manifest's value range)."""

    max_abs: Annotated[float, Meta(gt=0)] | None = None
    rel_l2: Annotated[float, Meta(gt=0, le=MAX_REL_L2)] | None = None
    psnr_db: Annotated[float, Meta(ge=MIN_PSNR_DB)] | None = None  # for FP16: max abs is noisy

    def __post_init__(self):
        if self.max_abs is None and self.rel_l2 is None and self.psnr_db is None:
            raise ValueError("a tolerance needs at least one of max_abs, rel_l2, psnr_db")


class GoldenCase(Strict):
    graph: str
    inputs: dict[str, str]  # graph input name -> npz key
    outputs: Annotated[dict[str, str], Meta(min_length=1)]  # graph output name -> npz key
    note: str = ""


class PictureCase(Strict):
    """Seeds drawn end to end by the runtime (seed -> z, and class_index -> one-hot label -> mapping -> truncation by
    w_avg and default_psi -> synthesis with constant noise, or each seed's random noise fed in the order of
    noise_inputs -> value_range -> uint8), against PyTorch's styles and pictures."""

    seeds: Annotated[list[Annotated[int, Meta(ge=0, le=2**32 - 1)]], Meta(min_length=1, max_length=64)]
    ws: str  # npz key: PyTorch's styles at the default psi, float32 [N, num_ws, w_dim]
    image: str  # npz key: PyTorch's pictures, uint8 [N, resolution, resolution, 3]
    noise: Literal["const", "random"] = "const"  # (format 3)
    class_index: Annotated[int, Meta(ge=0, lt=MAX_CLASSES)] | None = None  # exactly for class-conditional models
    # StyleGAN3: the camera transform the pictures were drawn through (None: the identity), 3x3 row by row
    camera: Annotated[list[Annotated[float, Meta(ge=-1e4, le=1e4)]], Meta(min_length=9, max_length=9)] | None = None
    note: str = ""


class DreamRun(Strict):
    """A short dream of a golden image (tile 0, mean-normalised steps), computed at export by the PyTorch reference
    with the backbone's own min_size: `gen verify` dreams it again through the runtime's loop with the manifest's
    numbers, so that dream.min_size (which octaves run) is checked as well as the gradient."""

    image: str  # npz key: float32 [3, H, W] in [0, 1]
    result: str  # npz key: float32 [3, H, W], the dreamed image
    size: tuple[Annotated[int, Meta(ge=1, le=1024)], Annotated[int, Meta(ge=1, le=1024)]]
    octaves: Annotated[int, Meta(ge=1, le=8)]
    octave_scale: Annotated[float, Meta(ge=1.0, le=4.0)]
    iterations: Annotated[int, Meta(ge=1, le=8)]
    step: Annotated[float, Meta(gt=0.0, le=1.0)]
    jitter: Annotated[int, Meta(ge=0, le=64)]
    seed: Annotated[int, Meta(ge=0, le=2**32 - 1)]
    note: str = ""

    def octave_sides(self) -> list[int]:
        """The smaller side of each octave the dream would run with no min_size: what min_size cuts."""
        h, w = self.size
        return [min(round(h / self.octave_scale**i), round(w / self.octave_scale**i)) for i in range(self.octaves)]


class GoldenSpec(Strict, kw_only=True):
    file: str = GOLDEN
    cases: Annotated[list[GoldenCase], Meta(min_length=1)]
    pictures: Annotated[list[PictureCase], Meta(max_length=64)] = field(default_factory=list)  # stylegan: >= 1
    dreams: Annotated[list[DreamRun], Meta(max_length=8)] = field(default_factory=list)  # dream bundles: >= 1
    tolerances: dict[str, Tolerance]


class ShapeProfile(Strict):
    min: Annotated[list[int], Meta(max_length=MAX_RANK)]
    opt: Annotated[list[int], Meta(max_length=MAX_RANK)]
    max: Annotated[list[int], Meta(max_length=MAX_RANK)]

    def __post_init__(self):
        if not len(self.min) == len(self.opt) == len(self.max) or not all(
                1 <= a <= b <= c <= MAX_DIM for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"profile needs 1 <= min <= opt <= max <= {MAX_DIM} per axis, got {self.min} "
                             f"{self.opt} {self.max}")


class EngineRecord(Strict):
    graph: str
    file: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]+\.engine$")]
    onnx_sha256: Sha256
    gpu_name: str
    compute_capability: Annotated[str, Meta(pattern=r"^[0-9]+\.[0-9]+$")]
    tensorrt_version: Annotated[str, Meta(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")]
    precision: Literal["fp32", "fp16"]
    profiles: dict[str, ShapeProfile]
    version_compatible: bool = False
    hardware_compatible: bool = False


class Manifest(Strict, kw_only=True):
    format: Literal["gen-bundle"]
    format_version: int
    gen_version: str
    created: str
    license: str
    kind: Literal["stylegan", "dream"]
    files: dict[str, FileEntry]
    graphs: dict[str, GraphSpec]
    preprocessing: Preprocessing
    stylegan: StyleGANMeta | None = None
    dream: DreamMeta | None = None
    golden: GoldenSpec
    engines: list[EngineRecord] | None = None  # None, not []: a bundle without engines stays as it was

    def __post_init__(self):
        needed = {"stylegan": {"mapping", "synthesis"}, "dream": {"features", "dream_grad"}}[self.kind]
        if getattr(self, self.kind) is None:
            raise ValueError(f"kind is '{self.kind}' but the '{self.kind}' section is missing")
        if missing := needed - set(self.graphs):
            raise ValueError(f"a {self.kind} bundle needs graphs {sorted(needed)}; missing {sorted(missing)}")
        for name, g in self.graphs.items():
            if g.file not in self.files:
                raise ValueError(f"graph '{name}' file '{g.file}' is not listed in files")
        for e in self.engines or []:
            if e.graph not in self.graphs or e.file not in self.files:
                raise ValueError(f"engine '{e.file}' names graph '{e.graph}' or a file that the bundle does not have")
        if self.golden.file not in self.files:
            raise ValueError(f"golden file '{self.golden.file}' is not listed in files")
        if self.kind == "stylegan" and not self.golden.pictures:
            raise ValueError("golden.pictures is empty: w_avg, default_psi and value_range would go unverified")
        if self.kind != "stylegan" and self.golden.pictures:
            raise ValueError(f"golden.pictures is for stylegan bundles, not {self.kind}")
        if (self.kind == "dream") != bool(self.golden.dreams):
            raise ValueError("golden.dreams is for dream bundles, each needs at least one (dream.min_size would go "
                             "unverified; a dream bundle made before format 3: re-export it)")
        if self.kind == "dream":  # an octave of exactly min_size (runs) and one a pixel short (skipped): any other
            m = self.dream.min_size  # min_size changes one of those dreams, so none can be left out to hide it
            sides = {s for d in self.golden.dreams for s in d.octave_sides()}
            if m not in sides or (m > 1 and m - 1 not in sides):
                raise ValueError(f"golden.dreams have no octave of {m} and of {m - 1} pixels, so they do not pin "
                                 f"dream.min_size {m}")
        # (whatever format_version says: a manifest could claim 2 to skip it)
        alias_free = self.kind == "stylegan" and self.stylegan.alias_free
        if self.kind == "stylegan" and not alias_free and all(p.noise != "random" for p in self.golden.pictures):
            raise ValueError("golden.pictures has no random-noise case: the order of stylegan.noise_inputs would go "
                             "unverified (a format 2 stylegan bundle: re-export it)")
        if alias_free and any(p.noise != "const" for p in self.golden.pictures):
            raise ValueError(f"golden.pictures has a random-noise case, but {self.stylegan.variant} has no noise")
        if any(p.camera is not None and p.camera[6:] != [0.0, 0.0, 1.0] for p in self.golden.pictures):
            raise ValueError("a golden picture's camera is not an affine transform (its last row must be 0, 0, 1)")
        if alias_free and not any(camera_moved(p.camera) for p in self.golden.pictures):
            raise ValueError(f"golden.pictures has no case with a moved camera (by {MIN_CAMERA_MOVE:g} or more): "
                             "the transform input would go unverified")
        if not alias_free and any(p.camera is not None for p in self.golden.pictures):
            raise ValueError("golden.pictures has a camera, which only StyleGAN3 bundles take")
        lo, hi = self.preprocessing.value_range
        for name, tol in self.golden.tolerances.items():
            if tol.max_abs is not None and tol.max_abs > MAX_ABS_OF_RANGE * (hi - lo):
                raise ValueError(f"tolerance {name}.max_abs {tol.max_abs:g} is looser than {MAX_ABS_OF_RANGE:g} of "
                                 f"the value range {[lo, hi]}")
            if tol.rel_l2 is None and tol.psnr_db is None and not (self.kind == "stylegan"
                                                                   and name in PICTURE_TOLERANCES):
                raise ValueError(f"tolerance {name} has only max_abs, a bound in the value range's units, which its "
                                 "outputs are not: it needs rel_l2 or psnr_db")
        for case in self.golden.cases:
            if case.graph not in self.graphs:
                raise ValueError(f"a golden case names graph '{case.graph}', which the bundle does not have")
            if case.graph not in self.golden.tolerances:
                raise ValueError(f"golden cases of '{case.graph}' have no tolerance")
            g = self.graphs[case.graph]
            if set(case.inputs) != {t.name for t in g.inputs} or not set(case.outputs) <= {t.name for t in g.outputs}:
                raise ValueError(f"a golden case of '{case.graph}' names inputs/outputs the graph does not have")
        if self.stylegan is not None:
            self.stylegan.check_graphs(self.graphs)
            c_dim = self.stylegan.c_dim
            for p in self.golden.pictures:  # drawn with a class exactly when the model has classes
                if not (p.class_index is None if c_dim == 0 else p.class_index is not None and p.class_index < c_dim):
                    need = f"one in 0..{c_dim - 1}" if c_dim else "none (the model is unconditional)"
                    raise ValueError(f"golden picture class_index {p.class_index} does not fit stylegan.c_dim {c_dim}: "
                                     f"it needs {need}")


class Bundle:
    """A validated bundle folder."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path, self.manifest = path, manifest

    def file(self, name: str) -> Path:
        return self.path / name

    def graph_path(self, graph: str) -> Path:
        return self.path / self.manifest.graphs[graph].file

    def golden(self) -> dict[str, np.ndarray]:
        """The golden arrays the manifest names, and only those (plain arrays: allow_pickle=False). Each is checked
        against every tensor it stands for from its npy header before any is read (dtype, rank, fixed sizes), and
        together they declare at most MAX_GOLDEN_BYTES."""
        path, wants = self.file(self.manifest.golden.file), golden_tensors(self.manifest)
        try:
            with zipfile.ZipFile(path) as npz:  # (an npz is a zip of .npy files)
                members, total = set(npz.namelist()), 0
                for key, tensors in wants.items():
                    if f"{key}.npy" not in members:
                        raise BundleError(f"{self.path}: golden data lacks '{clip(key, 80)}'; re-export the bundle")
                    with npz.open(f"{key}.npy") as f:
                        shape, _, dtype = _NPY_HEADERS[np.lib.format.read_magic(f)](f)
                    for name, want_dtype, want_shape in tensors:
                        if dtype != np.dtype(want_dtype) or len(shape) != len(want_shape) or any(
                                isinstance(d, int) and d != n for d, n in zip(want_shape, shape)):
                            raise BundleError(f"{self.path}: golden array '{clip(key, 80)}' is {clip(dtype, 40)} "
                                              f"{list(shape)} but '{clip(name, 80)}' is {want_dtype} {want_shape}; "
                                              "re-export the bundle")
                    size = int(np.prod(shape, dtype=object)) * dtype.itemsize  # (object: no int64 overflow)
                    total += size
                    if total > MAX_GOLDEN_BYTES:
                        raise BundleError(f"{self.path}: golden array '{clip(key, 80)}' declares {size:,} bytes, "
                                          f"past golden data's limit of {MAX_GOLDEN_BYTES:,} in all; re-export the "
                                          "bundle")
                arrays = {}
                for key in wants:
                    with npz.open(f"{key}.npy") as f:
                        arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
                return arrays
        except BundleError:
            raise
        except Exception as e:  # zip, npy-header and pickle refusals all arrive as different types
            raise BundleError(f"{path} cannot be read ({type(e).__name__}: {clip(e)}); copy the bundle again "
                              "or re-export it") from None


# npy format versions -> their header readers; numpy writes 1.0, and 2.0 for headers over 64 KiB
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def golden_tensors(m: Manifest) -> dict[str, list[tuple[str, str, list[int | str]]]]:
    """Each npz key the manifest names -> what it stands for: (tensor name, dtype, shape; a named axis any size)."""
    wants: dict[str, list] = {}
    for case in m.golden.cases:
        spec = m.graphs[case.graph]
        for names, tensors in ((case.inputs, spec.inputs), (case.outputs, spec.outputs)):
            for t in tensors:
                if t.name in names:
                    wants.setdefault(names[t.name], []).append((t.name, t.dtype, t.shape))
    for p in m.golden.pictures:  # (stylegan bundles only)
        s, n = m.stylegan, len(p.seeds)
        wants.setdefault(p.ws, []).append(("ws", "float32", [n, s.num_ws, s.w_dim]))
        wants.setdefault(p.image, []).append(("image", "uint8", [n, s.resolution, s.resolution, 3]))
    for d in m.golden.dreams:  # (dream bundles only)
        for key in (d.image, d.result):
            wants.setdefault(key, []).append(("image", "float32", [3, *d.size]))
    return wants


# ---------------------------------------------------------------------------------------------
# Reading


def is_bundle(path: str | Path) -> bool:
    """A folder whose manifest.json says it is a gen bundle (not any folder with a manifest.json). Reads the
    manifest only if it is a regular file of at most MAX_MANIFEST_BYTES (never a device, FIFO or huge file)."""
    try:
        raw = read_manifest(Path(path) / MANIFEST)
    except BundleError:
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT


def has_manifest(path: str | Path) -> bool:
    """A folder with a manifest.json entry of any kind, even a broken one: a command that takes a bundle or
    something else (`gen sample`: a checkpoint) treats it as a bundle, so that the bundle's own error is shown."""
    path = Path(path)
    return path.is_dir() and os.path.lexists(path / MANIFEST)


def clip(text: object, limit: int = 200) -> str:
    """Text from a manifest or a library, made one short line for a message."""
    line = re.sub(r"\s+", " ", str(text)).strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


# the closing quote optional: an unclosed string swallows the rest in one pass instead of failing from every
# escaped quote (quadratic), and json.loads still calls the text invalid
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.S)


def json_depth(data: bytes) -> int:
    """How deep the brackets of a JSON text nest, strings aside. Counted before parsing because the parser's
    own guard is the interpreter's recursion limit, which differs between Python builds and machines (and
    deep C recursion can overflow a small thread stack before it answers)."""
    codes = np.frombuffer(_JSON_STRING.sub(b'""', data), np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int32) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def read_manifest(manifest_path: Path) -> object:
    """The parsed JSON of a manifest file, after checking that it is a regular file of sane size."""
    try:
        st = manifest_path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{manifest_path} is not a regular file: not a gen bundle (or a damaged copy)")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{manifest_path} is {st.st_size} bytes, more than a manifest's limit of "
                              f"{MAX_MANIFEST_BYTES} bytes: not a gen bundle (or a damaged copy)")
        # O_NONBLOCK: should a FIFO replace the file after the check, opening it does not wait for a writer
        fd = os.open(manifest_path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise BundleError(f"{manifest_path} is not a regular file: not a gen bundle (or a damaged copy)")
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise BundleError(f"{manifest_path} cannot be read ({clip(e.strerror or e)}); check the bundle's "
                          "permissions or copy it again") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path} is more than a manifest's limit of {MAX_MANIFEST_BYTES} bytes: "
                          "not a gen bundle (or a damaged copy)")
    too_deep = BundleError(f"{manifest_path} is nested too deeply to be a manifest; the copy is damaged: copy "
                           "the bundle again")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise too_deep
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_not_finite, parse_float=_finite)
    except RecursionError:
        raise too_deep from None
    except ValueError as e:  # bad UTF-8, bad JSON, an integer of thousands of digits, NaN or infinity
        raise BundleError(f"{manifest_path} is not valid JSON ({clip(e)}); the copy is damaged: copy the bundle "
                          "again") from None


def _not_finite(name: str) -> float:
    raise ValueError(f"{name} is not a number a manifest may hold")


def _finite(text: str) -> float:
    x = float(text)
    if not np.isfinite(x):  # 1e999
        raise ValueError(f"{clip(text, 40)} is beyond a float")
    return x


def parse(raw: object, kind: type[Strict]) -> Strict:
    """Check parsed JSON (dicts, lists, numbers, strings) against one of the schema's structs and build it. A
    problem raises msgspec.ValidationError: its message, then ' - at `$.path`'."""
    return msgspec.convert(raw, kind)


def to_data(value: object) -> object:
    """Structs (and lists and dicts of them) as plain JSON data, fields that are None left out: how manifests and
    engine records are written (a reader fills in the defaults)."""
    data = msgspec.to_builtins(value, enc_hook=_numpy_value)

    def drop_none(x):
        if isinstance(x, dict):
            return {k: drop_none(v) for k, v in x.items() if v is not None}
        return [drop_none(v) for v in x] if isinstance(x, list) else x

    return drop_none(data)


def _numpy_value(x: object) -> object:
    """numpy numbers and arrays (as export computes w_avg, tolerances, sizes) as Python ones."""
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    raise NotImplementedError(f"{type(x).__name__} is not manifest data")


def schema_problem(e: msgspec.ValidationError, raw: object = None, kind: type | None = None) -> str:
    """msgspec's 'what - at `$.where`' as 'where: what', the form of every other manifest problem. msgspec writes
    a dict's key as `[...]`; given the data and the struct it was checked against, the key is named instead."""
    what, _, where = str(e).rpartition(" - at `")
    if not what:
        return clip(e)
    where = where.rstrip("`").removeprefix("$").lstrip(".") or "(top)"
    if "[...]" in where and kind is not None:
        where = _name_keys(where, raw, kind)
    return f"{clip(where, 120)}: {clip(what)}"


def _name_keys(where: str, raw: object, kind: type) -> str:
    """`where` with each `[...]` replaced by the dict's key whose value fails its type: msgspec checks a dict's
    items in order and reports the first that fails, so the first failing key is the one. Left as it is
    wherever the walk along the path does not find one."""
    out, value, typ = [], raw, kind
    try:
        for name, index in re.findall(r"\.?(\w+)|\[(\d+)\]|\[\.\.\.\]", where):
            if typing.get_origin(typ) in (typing.Union, types.UnionType):  # Optional[X]: the non-None member
                typ = next(t for t in typing.get_args(typ) if t is not type(None))
            if name:
                typ, value = typing.get_type_hints(typ)[name], value[name]
                out.append(f".{name}" if out else name)
            elif index:
                typ, value = typing.get_args(typ)[0], value[int(index)]
                out.append(f"[{index}]")
            else:
                typ = typing.get_args(typ)[1]
                bad = next(k for k, v in value.items() if not _converts(v, typ))
                value = value[bad]
                out.append(f"[{bad!r}]")
    except (KeyError, IndexError, TypeError, StopIteration, AttributeError):
        return where
    return "".join(out)


def _converts(value: object, typ: type) -> bool:
    try:
        msgspec.convert(value, typ)
        return True
    except msgspec.ValidationError:
        return False


def load_bundle(path: str | Path, check_files: bool = True) -> Bundle:
    """Read and validate a bundle: schema, version, kind, every file's presence, size and sha256."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle '{path}' does not exist or is not a folder; export one with `gen export`")
    manifest_path = path / MANIFEST
    if not os.path.lexists(manifest_path):
        raise BundleError(f"'{path}' has no {MANIFEST}: it is not a gen bundle (or an incomplete copy)")
    raw = read_manifest(manifest_path)
    _check_version(raw, manifest_path)
    try:
        manifest = parse(raw, Manifest)
    except msgspec.ValidationError as e:
        raise BundleError(f"{manifest_path}: {schema_problem(e, raw, Manifest)}\nre-export the bundle with "
                          "`gen export`") from None
    _check_golden_coverage(manifest, manifest_path)
    bundle = Bundle(path, manifest)
    if check_files:
        check_bundle_files(bundle)
    return bundle


def _check_golden_coverage(m: Manifest, where: Path) -> None:
    """Every graph is verified: a manifest cannot leave one out of `gen verify` (the schema allows it, for
    manifests that describe only engines)."""
    if missing := sorted(set(m.graphs) - {c.graph for c in m.golden.cases}):
        raise BundleError(f"{where}: graphs {clip(missing)} have no golden cases, so they cannot be verified; "
                          "re-export the bundle with `gen export`")


def _check_version(raw: object, where: Path) -> None:
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: the manifest must be a JSON object")
    if raw.get("format") != FORMAT:
        raise BundleError(f"{where}: format is {clip(repr(raw.get('format')), 80)}, not '{FORMAT}': this is not a "
                          "gen bundle")
    v = raw.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise BundleError(f"{where}: format_version is missing or not an integer")
    reads = f"versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION}"
    if v > FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format version {clip(v, 40)} is newer than this runtime reads "
                          f"({reads}); upgrade gen on this device")
    if v < MIN_FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format version {clip(v, 40)} is older than this runtime reads "
                          f"({reads}); re-export the bundle with this gen")


def check_bundle_files(bundle: Bundle) -> None:
    problems = []
    for name, entry in bundle.manifest.files.items():
        f = bundle.file(name)
        if Path(name).name != name:
            problems.append(f"file name '{name}' is not a plain file name; the manifest is not trustworthy")
        elif not f.is_file():
            problems.append(f"missing file '{name}': the bundle is incomplete; copy it again or re-export")
        elif f.stat().st_size != entry.size:
            problems.append(f"'{name}' is {f.stat().st_size} bytes, the manifest says {entry.size}: "
                            "a truncated or damaged copy; copy the bundle again")
        elif sha256_file(f) != entry.sha256:
            problems.append(f"'{name}' fails its sha256 check: a corrupt copy; copy the bundle again")
    if problems:
        raise BundleError("\n".join(f"{bundle.path}: {p}" for p in problems))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
