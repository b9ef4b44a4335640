"""TensorRT engines built and run through NVIDIA's API: the only module that imports `tensorrt` and
cuda-python (`cuda.bindings.runtime`, or the older `cuda.cudart`), and only when an engine is built or run.
What to build and which engine fits is decided in ``trt_plan``.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from gen.runtime.bundle import Bundle, BundleError, EngineRecord
from gen.runtime.errors import GenError, GenWarning
from gen.runtime.files import write_bytes_atomic

from .base import Closing, check_input
from .onnx_file import read_graph
from .trt_plan import (
    Device,
    build_source,
    cache_dir,
    can_build,
    derive_profiles,
    describe,
    engine_file_name,
    graph_precision,
    known_engines,
    missing_cuda_python_message,
    missing_tensorrt_message,
    no_engine_message,
    no_gpu_message,
    select_engine,
    shape_outside,
    short_version,
    timing_cache_name,
    write_record,
)

WORKSPACE_BYTES = 2 << 30


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
    # The checked, self-contained bytes, parsed from memory without a path: no side file can be read
    model = read_graph(onnx_path, bundle.manifest.files[spec.file], "TensorRT")
    if not parser.parse(model):
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
                          onnx_sha256=hashlib.sha256(model).hexdigest(), gpu_name=device.gpu_name,
                          compute_capability=device.compute_capability, tensorrt_version=device.tensorrt_version,
                          precision=precision, profiles=profiles, version_compatible=version_compatible,
                          hardware_compatible=hardware_compatible)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(folder / record.file, bytes(plan))
    if timing_cache:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return record


class TrtRunner(Closing):
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

    def close(self) -> None:
        """Free the device buffers and the stream (explicitly: a finaliser may run after CUDA has shut down)."""
        for ptr, _ in self._buffers.values():
            self.cudart.cudaFree(ptr)
        self._buffers = {}
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
