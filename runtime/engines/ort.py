"""The onnxruntime runner: the engine every install has. Its execution provider is picked automatically
(CUDA when onnxruntime-gpu sees a GPU, else CPU) or chosen: cpu, cuda, or ort-trt (onnxruntime's
TensorRT provider, engines cached in the bundle's trt-cache/ort)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from gen.runtime.bundle import BundleError, FileEntry, GraphSpec, TensorSpec, clip
from gen.runtime.errors import GenError, GenWarning

from .base import Closing, check_input, resolve_engine
from .onnx_file import read_graph

_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
              "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}
# TF32 (on by default on Ampere and later) has a 10-bit mantissa: FP32 graphs would miss their golden tolerances.
_CUDA = ("CUDAExecutionProvider", {"use_tf32": "0"})


class OrtRunner(Closing):
    """An onnxruntime session for one graph of a bundle, with its inputs checked against the manifest. The session
    is made from the file's bytes as read once, checked against `entry` (the manifest's size and sha256) when
    given and refused if it keeps tensors in another file (see onnx_file)."""

    precision = "fp32"

    def __init__(self, path: Path, spec: GraphSpec, engine: str = "auto", threads: int = 0,
                 entry: FileEntry | None = None) -> None:
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
        # Spinning worker threads steal the CPU from anything running beside them (a training, a kiosk's
        # display loop) and make both slower on a busy machine; waiting passively costs nothing when idle.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A second lock on external data (read_graph refuses it): a folder that cannot exist, not the current one.
        opts.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                      os.path.join(os.devnull, "no-external-data"))
        model = read_graph(path, entry)
        try:
            self.session = ort.InferenceSession(model, opts, providers=providers)
        except Exception as e:  # onnxruntime raises several unrelated types for an unreadable model
            raise BundleError(f"'{path}' cannot be loaded by onnxruntime ({str(e).splitlines()[0][:200]}); "
                              "the file is damaged or not ONNX: copy the bundle again or re-export") from None
        self._check_provider(engine)
        self._check_against_manifest(path)
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a failing op is raised, and said in one line: not logged as well

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
        """The graph's own signature (onnxruntime's view) against the manifest's: names, dtypes, ranks and fixed
        sizes of every input and output, so that a wrong manifest is refused here, not deep in a run."""
        got = {i.name: i for i in self.session.get_inputs()}
        want = {t.name: t for t in self.spec.inputs}
        if set(got) != set(want):
            raise BundleError(f"'{path.name}' has inputs {clip(sorted(got))} but the manifest says "
                              f"{clip(sorted(want))}; re-export the bundle")
        outs = {o.name: o for o in self.session.get_outputs()}
        if not {t.name for t in self.spec.outputs} <= set(outs):
            raise BundleError(f"'{path.name}' has outputs {clip(list(outs))} but the manifest says "
                              f"{clip([t.name for t in self.spec.outputs])}; re-export the bundle")
        for role, graph_side, specs in (("input", got, self.spec.inputs), ("output", outs, self.spec.outputs)):
            for t in specs:
                if problem := signature_mismatch(t, graph_side[t.name].type, graph_side[t.name].shape):
                    raise BundleError(f"'{path.name}' {role} '{clip(t.name, 80)}' {problem}; re-export the bundle")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {t.name: check_input(t, feeds.get(t.name), self.spec) for t in self.spec.inputs}
        try:
            outs = self.session.run([t.name for t in self.spec.outputs], feeds, self._run_options)
        except Exception as e:  # onnxruntime's Fail, InvalidArgument, RuntimeException...: an op failed as it ran
            raise BundleError(f"'{self.spec.file}' failed to run on {self.name} ({clip(e, 300)}); the graph is "
                              "broken: re-export the bundle (or, if memory ran out, use a smaller input)") from None
        return dict(zip([t.name for t in self.spec.outputs], outs))

    def close(self) -> None:
        self.session = None  # onnxruntime frees the session's memory when its last reference goes


_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)",
              "int32": "tensor(int32)"}


def signature_mismatch(spec: TensorSpec, ort_type: str, ort_shape: list | None) -> str | None:
    """How onnxruntime's view of a tensor (type 'tensor(float)', shape with an int per fixed axis and a str or
    None per dynamic one) contradicts the manifest's, or None. A named (dynamic) axis in the manifest must be
    dynamic in the graph; a fixed one must match, or be dynamic there (the manifest then pins it)."""
    ort_shape = list(ort_shape) if ort_shape is not None else None
    said = f"the manifest says {spec.dtype} {spec.shape}"
    if ort_type != _ORT_TYPES[spec.dtype]:
        return f"is {clip(ort_type, 40)} in the graph, {said}"
    if ort_shape is None:
        return None  # the graph states no shape: nothing to compare
    fixed = [d if isinstance(d, int) else None for d in ort_shape]
    if len(ort_shape) != len(spec.shape) or any(
            (isinstance(m, int) and g is not None and g != m) or (isinstance(m, str) and g is not None)
            for m, g in zip(spec.shape, fixed)):
        return f"has shape {clip(ort_shape, 80)} in the graph, {said}"
    return None
