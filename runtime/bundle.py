"""The bundle: the contract between `gen export` and the runtime. This docstring is its document.

A bundle is a folder::

    manifest.json        this schema (pydantic models below), format "gen-bundle", version 1
    *.onnx               the graphs named in manifest.graphs
    golden.npz           inputs and PyTorch reference outputs, for `gen verify` (never pickled)
    *.engine             TensorRT engines, when exported with --target trt (listed in ``engines``)
    timing.*.cache       TensorRT's timing cache for one GPU and TensorRT version, reused by later builds
    trt-cache/           engines built on first use on a device (not listed in files; never trusted
                         without their record, see gen.runtime.engines.trt_plan)

manifest.json fields:

- ``format`` = "gen-bundle", ``format_version`` (an integer; this runtime reads exactly
  ``FORMAT_VERSION``), ``gen_version`` (the gen that wrote it), ``created`` (UTC, ISO 8601),
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
  inputs and their shapes.
  Graphs: ``mapping`` (z [batch, z_dim] -> w [batch, w_dim]) and ``synthesis`` (ws [batch, num_ws,
  w_dim], ``const_noise`` [1] and one ``noise_i`` [batch, 1, r, r] per layer -> img [batch, 3, R, R]).
  The layer noise is ``noise_i + const_noise * baked_const_noise_i``: const mode feeds 1 and zeros,
  random mode feeds 0 and random noise, none feeds 0 and zeros.
- ``dream``: backbone, layers and weights, objective, and the value range the graphs expect.
  Graphs: ``features`` (image -> chosen layers) and ``dream_grad`` (image [1, 3, height, width] ->
  grad of the same shape and the scalar objective).
- ``golden``: the npz file, ``cases`` (graph, inputs and expected outputs by npz key, a note) and
  ``tolerances`` per graph (``max_abs``, ``rel_l2`` and/or ``psnr_db``: PSNR in dB over the reference's
  own value range). ``<graph>_fp16`` names the tolerance for any FP16 computation of ``<graph>``: the
  optional ``synthesis_fp16`` graph (FP16 weights and arithmetic, FP32 inputs and outputs, checked on
  the ``synthesis`` cases) and FP16 TensorRT engines of ``synthesis``.
- ``engines`` (optional): TensorRT engines, one record each: the graph it was built from and that
  graph's sha256, file, GPU name, compute capability ("8.7"), TensorRT version, precision, the
  optimisation profile per dynamic input (min/opt/max shapes), and whether it was built
  version-compatible or hardware-compatible (Ampere and later). An engine runs only on the GPU and
  TensorRT it was built for; ``gen.runtime.engines.trt_plan`` picks the one that fits or says why none does.

Validation on load (``load_bundle``) reports one line per problem with what to do about it. This module
reads and checks bundles and runs no engine; ``gen.export.writer`` writes them and holds each new one
to its golden data before it replaces anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import GenError
from .latents import DEFAULT_PSI

FORMAT = "gen-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"


class BundleError(GenError):
    """A bundle that cannot be used; the message has one line per problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(Strict):
    name: str = Field(min_length=1)
    dtype: Literal["float32", "float16", "int64", "int32"]
    shape: list[int | str]


class GraphSpec(Strict):
    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.onnx$")
    opset: int = Field(ge=7)
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)


class FileEntry(Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Preprocessing(Strict):
    value_range: tuple[float, float]
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"


class StyleGANMeta(Strict):
    variant: Literal["stylegan2", "stylegan1"]
    resolution: int = Field(ge=8, le=1024)
    z_dim: int = Field(ge=1)
    w_dim: int = Field(ge=1)
    num_ws: int = Field(ge=1)
    w_avg: list[float]
    default_psi: float = DEFAULT_PSI
    noise_inputs: list[str]

    @model_validator(mode="after")
    def _w_avg_size(self):
        if len(self.w_avg) != self.w_dim:
            raise ValueError(f"w_avg has {len(self.w_avg)} values but w_dim is {self.w_dim}")
        return self

    def check_graphs(self, graphs: dict[str, GraphSpec]) -> None:
        """The graph signatures the runtime relies on: names, and the static sizes of z, w and ws."""
        mapping, synthesis = graphs["mapping"], graphs["synthesis"]
        ins = {t.name: t.shape for t in synthesis.inputs}
        want = {"ws", "const_noise", *self.noise_inputs}
        if set(ins) != want or len(want) != 2 + len(self.noise_inputs):
            raise ValueError(f"synthesis inputs {sorted(ins)} do not match ws, const_noise and noise_inputs")
        if ins["ws"][1:] != [self.num_ws, self.w_dim]:
            raise ValueError(f"synthesis input ws has shape {ins['ws']}, not [batch, {self.num_ws}, {self.w_dim}]")
        for name in self.noise_inputs:
            if len(ins[name]) != 4 or not all(isinstance(d, int) for d in ins[name][1:]):
                raise ValueError(f"noise input {name} must have shape [batch, 1, h, w], not {ins[name]}")
        z = {t.name: t.shape for t in mapping.inputs}
        if list(z) != ["z"] or z["z"][1:] != [self.z_dim]:
            raise ValueError(f"mapping must take z [batch, {self.z_dim}], not {z}")
        if "w" not in {t.name for t in mapping.outputs} or "img" not in {t.name for t in synthesis.outputs}:
            raise ValueError("mapping must output w and synthesis must output img")


class DreamMeta(Strict):
    backbone: str
    layers: dict[str, float]
    objective: dict[str, object]
    classes: int | None = None
    min_size: int = Field(default=32, ge=1)  # the smallest image side the backbone takes


class Tolerance(Strict):
    max_abs: float | None = Field(default=None, gt=0)
    rel_l2: float | None = Field(default=None, gt=0)
    psnr_db: float | None = Field(default=None, gt=0)  # at least this PSNR (for FP16, where max abs is noisy)


class GoldenCase(Strict):
    graph: str
    inputs: dict[str, str]  # graph input name -> npz key
    outputs: dict[str, str]  # graph output name -> npz key
    note: str = ""


class GoldenSpec(Strict):
    file: str = GOLDEN
    cases: list[GoldenCase] = Field(min_length=1)
    tolerances: dict[str, Tolerance]


class ShapeProfile(Strict):
    min: list[int]
    opt: list[int]
    max: list[int]

    @model_validator(mode="after")
    def _ordered(self):
        if not len(self.min) == len(self.opt) == len(self.max) or not all(
                1 <= a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"profile needs 1 <= min <= opt <= max per axis, got {self.min} {self.opt} {self.max}")
        return self


class EngineRecord(Strict):
    graph: str
    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.engine$")
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    gpu_name: str
    compute_capability: str = Field(pattern=r"^[0-9]+\.[0-9]+$")
    tensorrt_version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    precision: Literal["fp32", "fp16"]
    profiles: dict[str, ShapeProfile]
    version_compatible: bool = False
    hardware_compatible: bool = False


class Manifest(Strict):
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

    @model_validator(mode="after")
    def _consistent(self):
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
        return self


class Bundle:
    """A validated bundle folder."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path, self.manifest = path, manifest

    def file(self, name: str) -> Path:
        return self.path / name

    def graph_path(self, graph: str) -> Path:
        return self.path / self.manifest.graphs[graph].file

    def golden(self) -> dict[str, np.ndarray]:
        """All golden arrays (plain arrays only: allow_pickle=False)."""
        path = self.file(self.manifest.golden.file)
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except Exception as e:  # zip, npy-header and pickle refusals all arrive as different types
            raise BundleError(f"{path} cannot be read ({type(e).__name__}: {e}); copy the bundle again "
                              "or re-export it") from None


# ---------------------------------------------------------------------------------------------
# Reading


def is_bundle(path: str | Path) -> bool:
    """A folder whose manifest.json says it is a gen bundle (not any folder with a manifest.json)."""
    try:
        return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_bundle(path: str | Path, check_files: bool = True) -> Bundle:
    """Read and validate a bundle: schema, version, kind, every file's presence, size and sha256."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle '{path}' does not exist or is not a folder; export one with `gen export`")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"'{path}' has no {MANIFEST}: it is not a gen bundle (or an incomplete copy)")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path} is not valid JSON ({e}); the copy is damaged: copy the bundle again"
                          ) from None
    _check_version(raw, manifest_path)
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        lines = [f"{manifest_path}: {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                 for err in e.errors()]
        raise BundleError("\n".join(lines + ["re-export the bundle with `gen export`"])) from None
    bundle = Bundle(path, manifest)
    if check_files:
        check_bundle_files(bundle)
    return bundle


def _check_version(raw: object, where: Path) -> None:
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: the manifest must be a JSON object")
    if raw.get("format") != FORMAT:
        raise BundleError(f"{where}: format is {raw.get('format')!r}, not '{FORMAT}': this is not a gen bundle")
    v = raw.get("format_version")
    if not isinstance(v, int):
        raise BundleError(f"{where}: format_version is missing or not an integer")
    if v > FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format version {v} is newer than this runtime reads ({FORMAT_VERSION}); "
                          "upgrade gen on this device")
    if v < FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format version {v} is older than this runtime reads ({FORMAT_VERSION}); "
                          "re-export the bundle with this gen")


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
