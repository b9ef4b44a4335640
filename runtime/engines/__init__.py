"""Engine runners, one small interface over each inference engine (as Polygraphy's backends):

- ``base``: the `Runner` interface, the engines this machine offers, input checks;
- ``onnx_file``: a graph file read once, checked against the manifest and refused if it keeps tensors in
  another file; every engine loads these bytes;
- ``ort``: onnxruntime (cpu, cuda, ort-trt), the engine every install has;
- ``trt_plan``: TensorRT's pure logic (engine names, profiles, choosing an engine, messages), tested
  everywhere; ``trt``: the code that calls TensorRT and cuda-python, imported only for --engine trt.
"""

from __future__ import annotations

from gen.runtime.bundle import Bundle, BundleError

from .base import ENGINES, Runner, available_engines, check_finite, resolve_engine

__all__ = ["ENGINES", "Runner", "available_engines", "check_finite", "open_runner", "resolve_engine"]


def open_runner(bundle: Bundle, graph: str, engine: str = "auto", threads: int = 0) -> Runner:
    """A runner for one graph of a bundle on `engine` (auto | cpu | cuda | ort-trt | trt), with `threads` CPU
    threads (0: onnxruntime's choice, all cores); close it when done."""
    if graph not in bundle.manifest.graphs:
        raise BundleError(f"bundle '{bundle.path}' has no graph '{graph}' (it has {sorted(bundle.manifest.graphs)})")
    if engine == "trt":
        resolve_engine(engine)
        from .trt import TrtRunner

        return TrtRunner(bundle, graph)
    from .ort import OrtRunner

    spec = bundle.manifest.graphs[graph]
    return OrtRunner(bundle.graph_path(graph), spec, engine, threads, entry=bundle.manifest.files[spec.file])
