"""TensorRT engines for a bundle's graphs: named, chosen and explained here; built and run through NVIDIA's API.

An engine runs only on the GPU (compute capability) and TensorRT version it was built for, unless it was
built hardware-compatible (any Ampere or later GPU) or version-compatible (this or a later TensorRT).
The runner takes an engine listed in the manifest or cached in ``<bundle>/trt-cache/`` that fits this
device; failing that it builds one from the ONNX graph on first use (minutes, once), as jetson-inference
does, or says exactly why it cannot.

The pure logic (names, optimisation profiles, selection, messages) needs neither TensorRT nor a GPU and
is tested everywhere. `tensorrt` and cuda-python (`cuda.bindings.runtime`, or the older `cuda.cudart`)
are imported only when an engine is built or run.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import Bundle, BundleError, EngineRecord, GraphSpec, ShapeProfile, sha256_file
from .errors import GenError, GenWarning
from .files import write_bytes_atomic

CACHE_DIR = "trt-cache"
PRECISIONS = ("fp32", "fp16")
# Graphs kept FP32 whatever precision is asked: the mapping MLP is ~1% of the work and its w feeds
# truncation and every style layer, where an FP16 error would spread through the picture.
KEEP_FP32 = {"mapping"}
DEFAULT_HW = (64, 512, 1024)  # dreaming: height and width min/opt/max
WORKSPACE_BYTES = 2 << 30


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
            rec = EngineRecord.model_validate_json(path.read_text(encoding="utf-8"))
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
    write_bytes_atomic(folder / f"{record.file}.json", (record.model_dump_json(indent=2) + "\n").encode())


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


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise GenError(missing_tensorrt_message()) from None
    return tensorrt


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6
        except ImportError:
            raise GenError(missing_cuda_python_message()) from None
    return cudart


def _check(cudart, result, what: str, no_gpu: bool = False):
    """cuda-python returns (error, values...); turn an error into one line."""
    err, *values = result
    if int(err) != 0:
        detail = f"{what}: {cudart.cudaGetErrorName(err)[1].decode()}"
        raise GenError(no_gpu_message(detail) if no_gpu else f"CUDA failed in {detail}")
    return values[0] if len(values) == 1 else values


def this_device(index: int = 0) -> Device:
    trt, cudart = import_tensorrt(), import_cudart()
    if _check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount", no_gpu=True) <= index:
        raise GenError(no_gpu_message("cudaGetDeviceCount found none"))
    prop = _check(cudart, cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties", no_gpu=True)
    name = prop.name.decode(errors="replace").rstrip("\0") if isinstance(prop.name, bytes) else str(prop.name)
    return Device(name, f"{prop.major}.{prop.minor}", short_version(trt.__version__))


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


def build_engine(bundle: Bundle, graph: str, folder: Path, device: Device, precision: str,
                 ranges: dict[str, tuple[int, int, int]] | None = None, timing_cache: Path | None = None,
                 version_compatible: bool = False, hardware_compatible: bool = False) -> EngineRecord:
    """Build an engine for `graph` with TensorRT's builder, write it into `folder`, and return its record."""
    trt = import_tensorrt()
    source, strongly_typed = build_source(graph, bundle.manifest.graphs, precision, hasattr(trt.BuilderFlag, "FP16"))
    onnx_path, spec = bundle.graph_path(source), bundle.manifest.graphs[source]
    profiles = derive_profiles(spec, ranges)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"TensorRT cannot parse {onnx_path.name}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; its 10-bit mantissa misses the FP32 tolerances
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if profiles:
        profile = builder.create_optimization_profile()
        for name, p in profiles.items():
            profile.set_shape(name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    cache_blob = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_blob)
    config.set_timing_cache(cache, ignore_mismatch=True)  # a stale cache only costs time, never correctness
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise GenError(f"TensorRT could not build an engine for '{graph}' (see its messages above); "
                       "try --fp32 or smaller --trt-batch / --trt-size ranges")
    record = EngineRecord(graph=graph, file=engine_file_name(graph, device.compute_capability,
                                                             device.tensorrt_version, precision),
                          onnx_sha256=sha256_file(onnx_path), gpu_name=device.gpu_name,
                          compute_capability=device.compute_capability, tensorrt_version=device.tensorrt_version,
                          precision=precision, profiles=profiles, version_compatible=version_compatible,
                          hardware_compatible=hardware_compatible)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(folder / record.file, bytes(plan))
    if timing_cache:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return record


class TrtRunner:
    """One graph of a bundle on a TensorRT engine; device memory through cuda-python (no torch)."""

    def __init__(self, bundle: Bundle, graph: str, fp16: bool | None = None,
                 ranges: dict[str, tuple[int, int, int]] | None = None) -> None:
        self.spec = bundle.manifest.graphs[graph]
        trt, self.cudart = import_tensorrt(), import_cudart()
        device = this_device()
        self.precision = graph_precision(graph, fp16, device.compute_capability)
        source, _ = build_source(graph, bundle.manifest.graphs, self.precision, hasattr(trt.BuilderFlag, "FP16"))
        onnx_sha = bundle.manifest.files[bundle.manifest.graphs[source].file].sha256
        known = known_engines(bundle)
        record = select_engine([r for _, r in known], graph, device, self.precision, onnx_sha)
        if record is None and not can_build(trt):
            raise GenError(no_engine_message(graph, [r for _, r in known], device, self.precision, onnx_sha))
        if record is None:
            folder = cache_dir(bundle)
            warnings.warn(f"building a TensorRT {self.precision} engine for '{graph}' on {device.gpu_name}: this "
                          f"takes minutes, once; it is cached in {folder}", GenWarning, stacklevel=2)
            folder.mkdir(parents=True, exist_ok=True)
            record = build_engine(bundle, graph, folder, device, self.precision, ranges,
                                  folder / timing_cache_name(device.compute_capability, device.tensorrt_version))
            write_record(folder, record)
            known.append((folder, record))
        path = next(f for f, r in known if r is record) / record.file
        self.record, self.name = record, f"tensorrt-{record.precision}"
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._runtime.engine_host_code_allowed = record.version_compatible  # a VC engine carries its own code
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise GenError(f"TensorRT could not load {path} ({describe(record)}); delete it to rebuild, "
                           "or re-export with `gen export --target trt` on this device")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart, self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor -> (device pointer, bytes)
        self._trt = trt

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart, self.cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self.cudart, self.cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .runners import check_input

        cudart, kinds = self.cudart, self.cudart.cudaMemcpyKind
        for t in self.spec.inputs:
            value = check_input(t, feeds.get(t.name), self.spec)
            value = value.astype(self._trt.nptype(self.engine.get_tensor_dtype(t.name)), copy=False)
            if why := shape_outside(self.record, t.name, value.shape):
                raise GenError(why)
            self.context.set_input_shape(t.name, value.shape)
            ptr = self._device_buffer(t.name, max(value.nbytes, 1))
            _check(cudart, cudart.cudaMemcpyAsync(ptr, value.ctypes.data, value.nbytes,
                                                  kinds.cudaMemcpyHostToDevice, self.stream), "cudaMemcpyAsync")
            self.context.set_tensor_address(t.name, ptr)
        outs = {}
        for t in self.spec.outputs:
            dtype = self._trt.nptype(self.engine.get_tensor_dtype(t.name))
            outs[t.name] = np.empty(tuple(self.context.get_tensor_shape(t.name)), dtype)
            self.context.set_tensor_address(t.name, self._device_buffer(t.name, max(outs[t.name].nbytes, 1)))
        if not self.context.execute_async_v3(self.stream):
            raise GenError(f"TensorRT failed to run {self.record.file} (see its messages above)")
        for name, host in outs.items():
            _check(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes,
                                                  kinds.cudaMemcpyDeviceToHost, self.stream), "cudaMemcpyAsync")
        _check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return {t.name: outs[t.name].astype(t.dtype, copy=False) for t in self.spec.outputs}

    def __del__(self) -> None:
        for ptr, _ in getattr(self, "_buffers", {}).values():
            self.cudart.cudaFree(ptr)
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)


def tensorrt_available() -> bool:
    """Whether the 'trt' engine can be offered (the GPU itself is checked when it is opened)."""
    from importlib.util import find_spec

    return find_spec("tensorrt") is not None

