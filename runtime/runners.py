"""Engine runners: one small interface (named inputs -> named outputs) over each inference engine.

onnxruntime is the engine every install has; its execution provider is picked automatically
(CUDA when onnxruntime-gpu sees a GPU, else CPU) or chosen with --engine: cpu, cuda, ort-trt
(onnxruntime's TensorRT provider, engines cached in the bundle's trt-cache/ort), or trt (TensorRT
engines run directly, gen.runtime.tensorrt).
"""

from __future__ import annotations

import ctypes.util
import warnings
from importlib.util import find_spec
from pathlib import Path
from typing import Protocol

import numpy as np

from .bundle import Bundle, BundleError, GraphSpec, TensorSpec
from .errors import GenError, GenWarning

ENGINES = ("auto", "cpu", "cuda", "ort-trt", "trt")
_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
              "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}
# TF32 (on by default on Ampere and later) has a 10-bit mantissa: FP32 graphs would miss their golden tolerances.
_CUDA = ("CUDAExecutionProvider", {"use_tf32": "0"})


class Runner(Protocol):
    name: str
    spec: GraphSpec

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def available_engines() -> list[str]:
    """Engines this machine can run now, best first."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    # onnxruntime-gpu always lists its TensorRT provider; it works only where TensorRT's libraries are.
    trt_libs = find_spec("tensorrt_libs") is not None or ctypes.util.find_library("nvinfer") is not None
    return ((["trt"] if find_spec("tensorrt") is not None else [])
            + (["ort-trt"] if "TensorrtExecutionProvider" in have and trt_libs else [])
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


class OrtRunner:
    """An onnxruntime session for one graph of a bundle, with its inputs checked against the manifest."""

    def __init__(self, path: Path, spec: GraphSpec, engine: str = "auto", threads: int = 0) -> None:
        import onnxruntime as ort

        self.engine = resolve_engine(engine)
        self.name, self.spec = f"onnxruntime-{self.engine}", spec
        providers = [_CUDA if p == _CUDA[0] else p for p in _PROVIDERS[self.engine]]
        if self.engine == "ort-trt":
            cache = path.parent / "trt-cache" / "ort"  # beside the graphs, like the trt engine's cache
            cache.mkdir(parents=True, exist_ok=True)
            options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                       "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
            providers[0] = ("TensorrtExecutionProvider", options)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        # Spinning threads steal CPU from anything timed beside them (see FINDINGS.md).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises several unrelated types for an unreadable model
            raise BundleError(f"'{path}' cannot be loaded by onnxruntime ({str(e).splitlines()[0][:200]}); "
                              "the file is damaged or not ONNX: copy the bundle again or re-export") from None
        self._check_provider(engine)
        self._check_against_manifest(path)

    def _check_provider(self, asked: str) -> None:
        """onnxruntime quietly drops a provider whose CUDA/cuDNN/TensorRT libraries fail to load: say so."""
        wanted, active = _PROVIDERS[self.engine][0], self.session.get_providers()
        if wanted in active:
            return
        why = (f"onnxruntime could not start its {wanted} (CUDA, cuDNN or TensorRT libraries missing or "
               f"not matching onnxruntime-gpu's CUDA version) and runs on {active[0]}")
        if asked != "auto":
            raise GenError(f"{why}; fix the libraries (see README, GPUs and TensorRT) or use --engine cpu")
        warnings.warn(f"{why}; falling back to cpu", GenWarning, stacklevel=3)
        self.engine, self.name = "cpu", "onnxruntime-cpu"

    def _check_against_manifest(self, path: Path) -> None:
        got = {i.name: i for i in self.session.get_inputs()}
        want = {t.name: t for t in self.spec.inputs}
        if set(got) != set(want):
            raise BundleError(f"'{path.name}' has inputs {sorted(got)} but the manifest says {sorted(want)}; "
                              "re-export the bundle")
        outs = [o.name for o in self.session.get_outputs()]
        if not {t.name for t in self.spec.outputs} <= set(outs):
            raise BundleError(f"'{path.name}' has outputs {outs} but the manifest says "
                              f"{[t.name for t in self.spec.outputs]}; re-export the bundle")
        for name, t in want.items():
            if len(got[name].shape) != len(t.shape):
                raise BundleError(f"'{path.name}' input '{name}' has rank {len(got[name].shape)}, "
                                  f"the manifest says shape {t.shape}; re-export the bundle")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {t.name: check_input(t, feeds.get(t.name), self.spec) for t in self.spec.inputs}
        outs = self.session.run([t.name for t in self.spec.outputs], feeds)
        return dict(zip([t.name for t in self.spec.outputs], outs))


def check_input(spec: TensorSpec, value: np.ndarray | None, graph: GraphSpec) -> np.ndarray:
    """Cast to the declared dtype; refuse a missing input or a shape the graph cannot take."""
    if value is None:
        raise GenError(f"input '{spec.name}' of {graph.file} was not given")
    value = np.ascontiguousarray(value, dtype=spec.dtype)
    if value.ndim != len(spec.shape) or any(isinstance(d, int) and d != v for d, v in zip(spec.shape, value.shape)):
        raise GenError(f"input '{spec.name}' of {graph.file} must have shape {spec.shape}, got {list(value.shape)}")
    return value


def open_runner(bundle: Bundle, graph: str, engine: str = "auto") -> Runner:
    if graph not in bundle.manifest.graphs:
        raise BundleError(f"bundle '{bundle.path}' has no graph '{graph}' (it has {sorted(bundle.manifest.graphs)})")
    if engine == "trt":
        resolve_engine(engine)
        from .tensorrt import TrtRunner

        return TrtRunner(bundle, graph)
    return OrtRunner(bundle.graph_path(graph), bundle.manifest.graphs[graph], engine)
