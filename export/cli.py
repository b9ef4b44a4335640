"""What `gen export` runs: the export itself, a self-check, and a short report."""

from __future__ import annotations

import warnings
from pathlib import Path

from rich.console import Console

from gen.runtime.errors import GenError, GenWarning
from gen.runtime.tensorrt import parse_range, tensorrt_available

from .fp16 import add_fp16_graph
from .stylegan import export_stylegan

TARGETS = ("onnx", "trt")
out = Console()


def export_stylegan_cli(checkpoint: Path, bundle_dir: Path, target: str = "onnx", psi: float = 0.7,
                        simplify: bool = True, overwrite: bool = False, fp16_graph: bool = False,
                        fp16: bool | None = None, trt_batch: str = "", trt_size: str = "",
                        version_compatible: bool = False, hardware_compatible: bool = False,
                        license: str | None = None) -> None:
    if target not in TARGETS:
        raise GenError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    ranges = trt_ranges(trt_batch, trt_size)  # refuse a bad range before minutes of export
    extra = {"license": license} if license else {}
    bundle, reports = export_stylegan(checkpoint, bundle_dir, simplify=simplify, overwrite=overwrite, psi=psi, **extra)
    report_bundle(bundle, reports)
    if fp16_graph:
        bundle, worst = add_fp16_graph(bundle)
        out.print(f"added synthesis_fp16.onnx (worst PSNR vs PyTorch {worst:.1f} dB on onnxruntime-cpu)")
    if target == "trt":
        add_trt_engines(bundle, fp16, ranges, version_compatible, hardware_compatible)


def trt_ranges(batch: str, size: str) -> dict[str, tuple[int, int, int]]:
    ranges = {"batch": parse_range(batch, "--trt-batch")} if batch else {}
    if size:
        ranges["height"] = ranges["width"] = parse_range(size, "--trt-size")
    return ranges


def add_trt_engines(bundle, fp16, ranges, version_compatible, hardware_compatible) -> None:
    """Engines are built where TensorRT is; elsewhere (a training box) the ONNX bundle is the product and
    the device builds its engines on first use, so a missing TensorRT warns instead of failing."""
    if not tensorrt_available():
        warnings.warn(f"TensorRT is not installed here, so {bundle.path} has ONNX graphs only; on the device, "
                      "`gen verify --engine trt` builds and caches its engines on first use (or run "
                      "`gen export --target trt` there)", GenWarning, stacklevel=3)
        return
    from .tensorrt import add_engines

    try:
        bundle = add_engines(bundle, fp16, ranges, version_compatible, hardware_compatible)
    except GenError as e:
        raise GenError(f"wrote the ONNX bundle {bundle.path} but no TensorRT engines: {e}") from None
    for r in bundle.manifest.engines or []:
        out.print(f"engine {r.file} ({r.gpu_name}, {r.precision})")


def report_bundle(bundle, reports: dict) -> None:
    for name, r in reports.items():
        slim = f", onnxslim {r.nodes_exported} -> {r.nodes_final} nodes" if r.simplified else ""
        out.print(f"{name}: {r.nodes_final} nodes{slim} ({r.seconds:.1f} s)")
    # write_bundle has already held the bundle to its golden data before putting it in place.
    out.print(f"wrote {bundle.path} ({len(bundle.manifest.golden.cases)} golden cases pass on onnxruntime-cpu)")
