"""What every benchmark shares: the machine it ran on, how a rate is timed, and how a result is recorded."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path


def describe(device: str = "cpu") -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return info


def gen_malloc(enabled: bool = True) -> str:
    """Make the malloc settings gen's CLI makes before every command (gen.runtime.memory), unless not `enabled`:
    the value a row records under "malloc" ("gen", or "default": glibc's own, also where it has no mallopt)."""
    from gen.runtime.memory import keep_freed_memory

    return "gen" if enabled and keep_freed_memory() else "default"


def best_rate(fn: Callable[[], object], work: float = 1.0, repeats: int = 3) -> float:
    """`work` units (images, steps) per second of the fastest of `repeats` calls of `fn`, after one warm-up:
    the fastest run is the one least disturbed by whatever else the machine was doing."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return work / best


RESULTS = Path(__file__).parent / "results"


def record(name: str, row: dict, machine: dict) -> Path:
    """Append `row`, dated and with the machine, as one JSON line to benchmarks/results/NAME.jsonl."""
    path = RESULTS / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **row,
                            "machine": machine}) + "\n")
    return path


def physical_cores() -> int:
    """Physical cores (distinct physical id / core id pairs in /proc/cpuinfo), else os.cpu_count(): the number of
    intra-op threads onnxruntime runs a session with by default (intra_op_num_threads 0)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            blocks = f.read().strip().split("\n\n")
    except OSError:
        return os.cpu_count() or 1
    cores = set()
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
    return len(cores) or os.cpu_count() or 1


SGEMM_SIZE = 3072  # n of the n x n float32 matrices: past the size where OpenBLAS's rate stops growing (2 cores: 2048
# gives 95% of it, 3072 and 4096 the same), and 0.2-0.5 s a product on a small CPU


def sgemm_gflops(threads: int, n: int = SGEMM_SIZE, repeats: int = 5) -> float:
    """This CPU's float32 matrix product rate in GFLOP/s (2 n^3 FLOP per product: 1 multiply-add = 2 FLOP): NumPy's
    BLAS multiplying two n x n float32 matrices with `threads` threads, best of `repeats` after one warm-up. Run in a
    fresh process, since a BLAS reads its thread count (OPENBLAS/OMP/MKL_NUM_THREADS) when it is loaded."""
    code = ("import time, numpy as np\n"
            f"n = {n}\nrng = np.random.default_rng(0)\n"
            "a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)\n"
            "c = a @ b\nbest = float('inf')\n"
            f"for _ in range({repeats}):\n"
            "    t0 = time.perf_counter(); np.matmul(a, b, out=c); best = min(best, time.perf_counter() - t0)\n"
            "print(2 * n**3 / best / 1e9)\n")
    env = {**os.environ, **{k: str(threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def graph_macs(path: str | Path, batch: int = 1) -> dict[str, int]:
    """Multiply-adds of one run of an ONNX graph at `batch` (every dynamic input axis set to it), by op type, from
    the shapes ONNX's shape inference gives each Conv, ConvTranspose, MatMul and Gemm node (1 MAC = 2 FLOP; their
    bias additions and every elementwise op are not counted):
    - Conv: output elements x (input channels / groups) x kernel area (weight [O, I/g, kh, kw]);
    - ConvTranspose: input elements x (output channels / groups) x kernel area (weight [I, O/g, kh, kw]): each
      input value is multiplied into a kernel's worth of outputs;
    - MatMul and Gemm: output elements x the inner dimension."""
    macs = dict.fromkeys(MAC_OPS, 0)
    for op, n in node_macs(path, batch).values():
        macs[op] += n
    return macs


def node_macs(path: str | Path, batch: int = 1) -> dict[str, tuple[str, int]]:
    """graph_macs node by node: {node name: (op type, multiply-adds)} for the graph's Conv, ConvTranspose, MatMul
    and Gemm nodes (a nameless node is called after its first output)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = batch  # (sets the oneof: the dim_param goes)
    model = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    shapes: dict[str, list[int | None]] = {t.name: list(t.dims) for t in model.graph.initializer}
    for v in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]

    def shape(name: str, node) -> list[int]:
        s = shapes.get(name)
        if s is None or any(d is None for d in s):
            raise ValueError(f"{Path(path).name}: no static shape for {node.op_type} node {node.name!r}'s {name!r}")
        return s

    macs: dict[str, tuple[str, int]] = {}
    for node in model.graph.node:
        if node.op_type not in MAC_OPS:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        out = shape(node.output[0], node)
        if node.op_type == "Conv":
            n = _prod(out) * _prod(shape(node.input[1], node)[1:])
        elif node.op_type == "ConvTranspose":
            n = _prod(shape(node.input[0], node)) * _prod(shape(node.input[1], node)[1:])
        elif node.op_type == "MatMul":
            n = _prod(out) * shape(node.input[0], node)[-1]
        else:  # Gemm: A [M, K], or [K, M] with transA
            a = shape(node.input[0], node)
            n = _prod(out) * (a[0] if attrs.get("transA", 0) else a[1])
        macs[node.name or node.output[0]] = (node.op_type, n)
    return macs


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out
