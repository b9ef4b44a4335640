"""`gen export` as a library: a checkpoint -> an ONNX bundle, held to its golden data, plus on request an
FP16 synthesis graph and TensorRT engines for this GPU."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gen.runtime.bundle import Bundle, EngineRecord
from gen.runtime.engines import available_engines
from gen.runtime.errors import GenError, GenWarning
from gen.runtime.latents import DEFAULT_PSI

from .fp16 import add_fp16_graph
from .onnx_graph import GraphReport
from .stylegan import LICENSE, export_stylegan

TARGETS = ("onnx", "trt")


@dataclass
class Exported:
    """What an export wrote: the bundle, how each graph was made, and the optional extras."""

    bundle: Bundle
    reports: dict[str, GraphReport]
    fp16_psnr_db: float | None = None  # worst PSNR of synthesis_fp16 against PyTorch, when it was added
    engines: list[EngineRecord] = field(default_factory=list)


def export_stylegan_bundle(checkpoint: Path, out: Path, target: str = "onnx", psi: float = DEFAULT_PSI,
                           simplify: bool = True, overwrite: bool = False, fp16_graph: bool = False,
                           fp16: bool | None = None, ranges: dict[str, tuple[int, int, int]] | None = None,
                           version_compatible: bool = False, hardware_compatible: bool = False,
                           license: str = LICENSE, announce: Callable[[str], None] = print) -> Exported:
    """Export, self-check (write_bundle holds the bundle to its golden data before it is in place), and
    add the FP16 graph and TensorRT engines when asked. `announce` gets a line before each engine build."""
    if target not in TARGETS:
        raise GenError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    bundle, reports = export_stylegan(checkpoint, out, simplify=simplify, overwrite=overwrite, psi=psi,
                                      license=license)
    done = Exported(bundle, reports)
    if fp16_graph:
        done.bundle, done.fp16_psnr_db = add_fp16_graph(done.bundle)
    if target == "trt":
        done.bundle = add_trt_engines(done.bundle, fp16, ranges, version_compatible, hardware_compatible, announce)
        done.engines = list(done.bundle.manifest.engines or [])
    return done


def add_trt_engines(bundle: Bundle, fp16: bool | None, ranges: dict | None, version_compatible: bool,
                    hardware_compatible: bool, announce: Callable[[str], None] = print) -> Bundle:
    """Engines are built where TensorRT is; elsewhere (a training box) the ONNX bundle is the product and
    the device builds its engines on first use, so a missing TensorRT warns instead of failing."""
    if "trt" not in available_engines():
        warnings.warn(f"TensorRT is not installed here, so {bundle.path} has ONNX graphs only; on the device, "
                      "`gen verify --engine trt` builds and caches its engines on first use (or run "
                      "`gen export --target trt` there)", GenWarning, stacklevel=3)
        return bundle
    from .engines import add_engines

    try:
        return add_engines(bundle, fp16, ranges, version_compatible, hardware_compatible, announce)
    except GenError as e:
        raise GenError(f"wrote the ONNX bundle {bundle.path} but no TensorRT engines: {e}") from None
