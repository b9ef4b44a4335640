"""What every engine runner shares: the interface (named inputs -> named outputs), the engines this
machine offers, and the check of each input against the manifest before it reaches an engine."""

from __future__ import annotations

from functools import cache
from importlib.util import find_spec
from typing import Protocol

import numpy as np

from gen.runtime.bundle import BundleError, GraphSpec, TensorSpec, clip
from gen.runtime.errors import GenError

ENGINES = ("auto", "cpu", "cuda", "ort-trt", "trt")


class Runner(Protocol):
    """One graph on one engine. Close it (or use it in a `with` block) to free the engine's memory."""

    name: str
    spec: GraphSpec
    precision: str  # "fp32", or "fp16" for an FP16 TensorRT engine (held to the graph's FP16 tolerance)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc) -> None: ...


class Closing:
    """`with runner:` closes it; a runner says how in `close`."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@cache
def _tensorrt_libraries() -> bool:
    """Whether TensorRT's libraries are installed (the tensorrt_libs wheel, or libnvinfer where the loader finds
    it). Looked for once a process, and only where onnxruntime offers its TensorRT provider: find_library runs
    ldconfig, which costs more than opening a small graph."""
    import ctypes.util

    return find_spec("tensorrt_libs") is not None or ctypes.util.find_library("nvinfer") is not None


def available_engines() -> list[str]:
    """Engines this machine can run now, best first."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    # onnxruntime-gpu always lists its TensorRT provider; it works only where TensorRT's libraries are.
    return ((["trt"] if find_spec("tensorrt") is not None else [])
            + (["ort-trt"] if "TensorrtExecutionProvider" in have and _tensorrt_libraries() else [])
            + (["cuda"] if "CUDAExecutionProvider" in have else []) + ["cpu"])


def resolve_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise GenError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}")
    engines = available_engines()
    if engine == "auto":  # onnxruntime's best: TensorRT engines are asked for by name (first builds take minutes)
        return next(e for e in engines if e in ("cuda", "cpu"))
    if engine not in engines:
        need = {"trt": "NVIDIA's tensorrt Python package", "ort-trt": "onnxruntime-gpu and TensorRT's libraries"}
        raise GenError(f"engine '{engine}' is not available here (available: {', '.join(engines)}); "
                       f"{engine} needs {need.get(engine, 'onnxruntime-gpu')}")
    return engine


def check_input(spec: TensorSpec, value: np.ndarray | None, graph: GraphSpec) -> np.ndarray:
    """Cast to the declared dtype; refuse a missing input or a shape the graph cannot take."""
    if value is None:
        raise GenError(f"input '{clip(spec.name, 80)}' of {graph.file} was not given")
    value = np.asarray(value)
    if value.dtype.kind not in "biuf":  # strings, objects, dates: no cast to a tensor's dtype means anything
        raise GenError(f"input '{clip(spec.name, 80)}' of {graph.file} must be numbers, got {value.dtype}")
    value = np.ascontiguousarray(value, dtype=spec.dtype)
    if value.ndim != len(spec.shape) or any(isinstance(d, int) and d != v for d, v in zip(spec.shape, value.shape)):
        raise GenError(f"input '{clip(spec.name, 80)}' of {graph.file} must have shape {spec.shape}, "
                       f"got {list(value.shape)}")
    return value


def check_finite(graph: GraphSpec, name: str, value: np.ndarray) -> np.ndarray:
    """`value`, the graph's output `name`, if it is all finite numbers. Where the runtime relies on an output (w, img,
    a dream's gradient and objective), NaN or infinity would become black pictures and exit 0."""
    if not np.isfinite(value).all():
        raise BundleError(f"'{graph.file}' gave NaN or infinity in '{clip(name, 80)}': its weights or ops are broken "
                          "(re-export the bundle), or its input is far out of range")
    return value
