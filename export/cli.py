"""What `gen export` runs: the export itself, a self-check, and a short report."""

from __future__ import annotations

import warnings
from pathlib import Path

from rich.console import Console

from gen.runtime.errors import GenError, GenWarning
from gen.runtime.verify import verify

from .stylegan import export_stylegan

TARGETS = ("onnx", "trt")
out = Console()


def export_stylegan_cli(checkpoint: Path, bundle_dir: Path, target: str = "onnx", psi: float = 0.7,
                        simplify: bool = True, overwrite: bool = False) -> None:
    if target not in TARGETS:
        raise GenError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    if target == "trt":
        warnings.warn("TensorRT engines are not available in this gen yet; writing the ONNX bundle "
                      "(build engines later on the device)", GenWarning, stacklevel=2)
    bundle, reports = export_stylegan(checkpoint, bundle_dir, simplify=simplify, overwrite=overwrite, psi=psi)
    report_bundle(bundle, reports)


def report_bundle(bundle, reports: dict) -> None:
    for name, r in reports.items():
        slim = f", onnxslim {r.nodes_exported} -> {r.nodes_final} nodes" if r.simplified else ""
        out.print(f"{name}: {r.nodes_final} nodes{slim} ({r.seconds:.1f} s)")
    bad = [c for c in verify(bundle, "cpu") if not c.ok]
    if bad:
        worst = max(bad, key=lambda c: c.max_abs)
        raise GenError(f"the exported {worst.graph} graph disagrees with PyTorch (max abs {worst.max_abs:.2e}, "
                       f"{worst.note}); the bundle at {bundle.path} must not be used")
    out.print(f"wrote {bundle.path} ({len(bundle.manifest.golden.cases)} golden cases pass on onnxruntime-cpu)")
