"""Engine runners: one small interface (named inputs -> named outputs) over each inference engine.

onnxruntime is the engine every install has; its execution provider is picked automatically
(CUDA when onnxruntime-gpu sees a GPU, else CPU) or chosen with --engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .bundle import Bundle, BundleError, GraphSpec, TensorSpec
from .errors import GenError

ENGINES = ("auto", "cpu", "cuda")
_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


class Runner(Protocol):
    name: str
    spec: GraphSpec

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def available_engines() -> list[str]:
    """Engines this machine can run now, best first."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    return (["cuda"] if "CUDAExecutionProvider" in have else []) + ["cpu"]


def resolve_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise GenError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}")
    engines = available_engines()
    if engine == "auto":
        return engines[0]
    if engine not in engines:
        raise GenError(f"engine '{engine}' is not available here (available: {', '.join(engines)}); "
                       "for cuda install onnxruntime-gpu")
    return engine


class OrtRunner:
    """An onnxruntime session for one graph of a bundle, with its inputs checked against the manifest."""

    def __init__(self, path: Path, spec: GraphSpec, engine: str = "auto", threads: int = 0) -> None:
        import onnxruntime as ort

        self.engine = resolve_engine(engine)
        self.name, self.spec = f"onnxruntime-{self.engine}", spec
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        # Spinning threads steal CPU from anything timed beside them (see FINDINGS.md).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=_PROVIDERS[self.engine])
        except Exception as e:  # onnxruntime raises several unrelated types for an unreadable model
            raise BundleError(f"'{path}' cannot be loaded by onnxruntime ({str(e).splitlines()[0][:200]}); "
                              "the file is damaged or not ONNX: copy the bundle again or re-export") from None
        self._check_against_manifest(path)

    def _check_against_manifest(self, path: Path) -> None:
        got = {i.name: i for i in self.session.get_inputs()}
        want = {t.name: t for t in self.spec.inputs}
        if set(got) != set(want):
            raise BundleError(f"'{path.name}' has inputs {sorted(got)} but the manifest says {sorted(want)}; "
                              "re-export the bundle")
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
    return OrtRunner(bundle.graph_path(graph), bundle.manifest.graphs[graph], engine)
