"""TensorRT's pure logic: engine names, optimisation profiles, choosing an engine and saying why none fits.

An engine runs only on the GPU (compute capability) and TensorRT version it was built for, unless it was
built hardware-compatible (any Ampere or later GPU) or version-compatible (this or a later TensorRT).
The runner (``trt.py``) takes an engine listed in the manifest or cached in ``<bundle>/trt-cache/`` that
fits this device; failing that it builds one from the ONNX graph on first use (minutes, once), as
jetson-inference does, or says exactly why it cannot.

Nothing here needs TensorRT or a GPU, so all of it is tested everywhere.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from gen.runtime.bundle import Bundle, EngineRecord, GraphSpec, ShapeProfile, parse, to_data
from gen.runtime.errors import GenError
from gen.runtime.files import write_bytes_atomic

CACHE_DIR = "trt-cache"
# Graphs kept FP32 whatever precision is asked: the mapping MLP is ~1% of the work and its w feeds
# truncation and every style layer, where an FP16 error would spread through the picture.
KEEP_FP32 = {"mapping"}
DEFAULT_HW = (64, 512, 1024)  # dreaming: height and width min/opt/max


@dataclass(frozen=True)
class Device:
    gpu_name: str
    compute_capability: str  # "8.7"
    tensorrt_version: str  # "10.3.0"


# ---------------------------------------------------------------------------------------------
# Names and versions


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.3.0.30' or '10.8.0.post1' -> (10, 3, 0): TensorRT's release, what an engine is tied to."""
    parts = re.findall(r"\d+", version)[:3]
    if len(parts) < 2:
        raise GenError(f"cannot read the TensorRT version '{version}'")
    return tuple(int(p) for p in parts + ["0"] * (3 - len(parts)))


def short_version(version: str) -> str:
    return ".".join(map(str, version_tuple(version)))


def engine_file_name(graph: str, compute_capability: str, tensorrt_version: str, precision: str) -> str:
    """e.g. synthesis.sm87.trt10.3.0.fp16.engine: the GPU, TensorRT and precision it is for, readable by eye."""
    return f"{graph}.sm{compute_capability.replace('.', '')}.trt{short_version(tensorrt_version)}.{precision}.engine"


def timing_cache_name(compute_capability: str, tensorrt_version: str) -> str:
    """Timing measurements are valid only for one GPU and TensorRT; the name keeps caches apart."""
    return f"timing.sm{compute_capability.replace('.', '')}.trt{short_version(tensorrt_version)}.cache"


def has_fast_fp16(compute_capability: str) -> bool:
    """FP16 is the default where the GPU runs it at least as fast as FP32 (not Maxwell, not Pascal GeForce 6.1)."""
    major, minor = (int(x) for x in compute_capability.split("."))
    return (major, minor) in {(5, 3), (6, 0), (6, 2)} or major >= 7


def graph_precision(graph: str, fp16: bool | None, compute_capability: str) -> str:
    """fp16=None means: FP16 where the GPU is fast at it. An `_fp16` graph is FP16 by construction."""
    if graph.endswith("_fp16"):
        return "fp16"
    want = has_fast_fp16(compute_capability) if fp16 is None else fp16
    return "fp16" if want and graph not in KEEP_FP32 else "fp32"


# ---------------------------------------------------------------------------------------------
# Optimisation profiles


def parse_range(text: str, what: str) -> tuple[int, int, int]:
    """'1,8,32' -> (1, 8, 32); one number N means N,N,N."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise GenError(f"{what} must be MIN,OPT,MAX (e.g. 1,8,32), got '{text}'") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise GenError(f"{what} must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got '{text}'")
    return values[0], values[1], values[2]


def default_ranges(spec: GraphSpec) -> dict[str, tuple[int, int, int]]:
    """Sensible min/opt/max per named axis. TensorRT plans memory for the max, so the batch's max
    shrinks as the pictures grow (activations grow with the square of the resolution)."""
    pixels = max((_prod(t.shape[-2:]) for t in spec.outputs if all(isinstance(d, int) for d in t.shape[-2:])),
                 default=0)
    top = 32 if pixels <= 256 * 256 else 16 if pixels <= 512 * 512 else 8
    return {"batch": (1, min(8, top), top), "height": DEFAULT_HW, "width": DEFAULT_HW}


def derive_profiles(spec: GraphSpec, ranges: dict[str, tuple[int, int, int]] | None = None) -> dict[str, ShapeProfile]:
    """One optimisation profile: min/opt/max shapes for each input with a named dynamic axis.

    `ranges` (axis name -> min, opt, max) override the defaults; fixed axes keep their size.
    """
    ranges = default_ranges(spec) | (ranges or {})
    profiles = {}
    for t in spec.inputs:
        if all(isinstance(d, int) for d in t.shape):
            continue
        shapes = []
        for d in t.shape:
            if isinstance(d, int):
                shapes.append((d, d, d))
            elif d in ranges:
                shapes.append(ranges[d])
            else:
                raise GenError(f"input '{t.name}' of {spec.file} has a dynamic axis '{d}' with no range; "
                               f"give one (known axes: {', '.join(sorted(ranges))})")
        profiles[t.name] = ShapeProfile(min=[s[0] for s in shapes], opt=[s[1] for s in shapes],
                                        max=[s[2] for s in shapes])
    return profiles


def shape_outside(record: EngineRecord, name: str, shape: tuple[int, ...]) -> str | None:
    """Why an input shape cannot run on this engine, or None when it can."""
    p = record.profiles.get(name)
    if p is None or all(lo <= s <= hi for s, lo, hi in zip(shape, p.min, p.max)):
        return None
    return (f"input '{name}' shape {list(shape)} is outside the engine's profile {p.min}..{p.max} "
            f"({record.file}); use smaller batches, or rebuild with wider ranges (gen export --target trt)")


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


# ---------------------------------------------------------------------------------------------
# Choosing an engine, and saying why none fits


def mismatch(record: EngineRecord, device: Device, onnx_sha256: str | None = None) -> str | None:
    """Why this engine cannot run here (None when it can)."""
    if onnx_sha256 and record.onnx_sha256 != onnx_sha256:
        return "it was built from a different version of the graph"
    why = []
    if record.hardware_compatible:
        if int(device.compute_capability.split(".")[0]) < 8:
            why.append("it runs on Ampere and later GPUs only")
    elif record.compute_capability != device.compute_capability:
        why.append("it was built for another GPU")
    have, built = version_tuple(device.tensorrt_version), version_tuple(record.tensorrt_version)
    if record.version_compatible:
        if have < built:
            why.append(f"it needs TensorRT {record.tensorrt_version} or later")
    elif have != built:
        why.append("it was built with another TensorRT version")
    return " and ".join(why) or None


def select_engine(records: list[EngineRecord], graph: str, device: Device, precision: str | None = None,
                  onnx_sha256: str | None = None) -> EngineRecord | None:
    """The best engine of `graph` for this device: the asked precision first (any when None), an engine
    built for exactly this GPU and TensorRT before a compatible one (which can be slower)."""
    fits = [r for r in records if r.graph == graph and (precision is None or r.precision == precision)
            and mismatch(r, device, onnx_sha256) is None]
    return min(fits, key=lambda r: (r.version_compatible or r.hardware_compatible, r.precision != "fp16"),
               default=None)


def describe(record: EngineRecord) -> str:
    extra = "".join([", version-compatible" if record.version_compatible else "",
                     ", Ampere+" if record.hardware_compatible else ""])
    return (f"{record.file} built for compute {record.compute_capability} / TensorRT {record.tensorrt_version} "
            f"({record.gpu_name}, {record.precision}{extra})")


def no_engine_message(graph: str, records: list[EngineRecord], device: Device, precision: str | None = None,
                      onnx_sha256: str | None = None) -> str:
    """One line: what engines there are, why each does not fit here, and what to run."""
    here = f"this is {device.compute_capability} / {device.tensorrt_version} ({device.gpu_name})"
    fix = "-> run `gen export --target trt` here, or install TensorRT's builder to build on first use"
    mine = [r for r in records if r.graph == graph]
    if not mine:
        return f"the bundle has no TensorRT engine for '{graph}' and TensorRT here cannot build one; {here} {fix}"
    why = "; ".join(f"{describe(r)}: {mismatch(r, device, onnx_sha256) or f'not {precision}'}" for r in mine)
    return f"no TensorRT engine for '{graph}' fits this GPU: {why}; {here} {fix}"


# ---------------------------------------------------------------------------------------------
# Engines of a bundle: listed in its manifest, or cached beside its graphs after a build here


def cache_dir(bundle: Bundle) -> Path:
    return Path(os.environ.get("GEN_TRT_CACHE") or bundle.path / CACHE_DIR)


def cached_records(folder: Path) -> list[EngineRecord]:
    """Records of engines built here earlier; a damaged or half-written one is skipped, and rebuilt."""
    records = []
    for path in sorted(folder.glob("*.engine.json")):
        try:
            rec = parse(json.loads(path.read_text(encoding="utf-8")), EngineRecord)
        except (OSError, ValueError):
            continue
        if (folder / rec.file).is_file():
            records.append(rec)
    return records


def known_engines(bundle: Bundle) -> list[tuple[Path, EngineRecord]]:
    """(folder, record) of every engine: the bundle's first, then the cache's."""
    own = [(bundle.path, r) for r in bundle.manifest.engines or []]
    return own + [(cache_dir(bundle), r) for r in cached_records(cache_dir(bundle))]


def write_record(folder: Path, record: EngineRecord) -> None:
    write_bytes_atomic(folder / f"{record.file}.json", (json.dumps(to_data(record), indent=2) + "\n").encode())


# ---------------------------------------------------------------------------------------------
# The device side: NVIDIA's tensorrt and cuda-python, imported here only


def missing_tensorrt_message() -> str:
    return ("TensorRT is not installed: the 'trt' engine needs NVIDIA's tensorrt Python package (on a Jetson "
            "it comes with JetPack: sudo apt install python3-libnvinfer; on a desktop: NVIDIA's tensorrt wheels); "
            "use --engine cuda or --engine cpu meanwhile")


def missing_cuda_python_message() -> str:
    return ("the 'trt' engine needs cuda-python for GPU memory: pip install 'cuda-python>=12' "
            "(the major version of your CUDA); use --engine cuda or --engine cpu meanwhile")


def no_gpu_message(detail: str) -> str:
    return f"no CUDA GPU is usable here ({detail}); the 'trt' engine needs one: use --engine cpu"


def can_build(trt) -> bool:
    """The full TensorRT has a builder; the lean and dispatch runtimes only run engines."""
    return hasattr(trt, "Builder")


def build_source(graph: str, graphs: set[str] | dict, precision: str, has_fp16_flag: bool) -> tuple[str, bool]:
    """Which ONNX graph an engine is built from, and whether strongly typed (precision from the graph).

    FP16 prefers the bundle's `<graph>_fp16` (FP16 inside, FP32 at the edges, its PSNR checked at export);
    else TensorRT 10's FP16 builder flag, which TensorRT 11 removed along with all weak typing.
    """
    if graph.endswith("_fp16"):
        return graph, True
    if precision == "fp32":
        return graph, False
    if f"{graph}_fp16" in graphs:
        return f"{graph}_fp16", True
    if has_fp16_flag:
        return graph, False
    raise GenError(f"this TensorRT builds FP16 only from an FP16 graph and the bundle has no '{graph}_fp16'; "
                   "re-export with `gen export --fp16-graph`, or use --fp32")
