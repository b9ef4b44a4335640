"""`gen export --target trt`: TensorRT engines for this GPU, built into the bundle and listed in its manifest.

The builder itself is gen.runtime.engines.trt.build_engine, which the runtime also uses to build on first
use; this module only decides what to build and rewrites the bundle with the engines, their records
and the timing cache (kept in the bundle, so a rebuild here reuses its measurements).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gen.runtime.bundle import Bundle, to_data
from gen.runtime.engines.trt import build_engine, import_tensorrt, this_device
from gen.runtime.engines.trt_plan import can_build, graph_precision, timing_cache_name
from gen.runtime.errors import GenError

from .writer import extend_bundle


def engine_graphs(bundle: Bundle) -> list[str]:
    """Every graph but the FP16 variants, which are build sources of their FP32 graph's FP16 engine."""
    return [g for g in bundle.manifest.graphs if not g.endswith("_fp16")]


def add_engines(bundle: Bundle, fp16: bool | None = None, ranges: dict[str, tuple[int, int, int]] | None = None,
                version_compatible: bool = False, hardware_compatible: bool = False,
                announce: Callable[[str], None] = print) -> Bundle:
    """Build an engine per graph on this GPU and rewrite the bundle with them (replacing same-named ones);
    `announce` gets a line before each build, which takes minutes."""
    if not can_build(import_tensorrt()):
        raise GenError("this TensorRT has no builder (a lean or dispatch runtime); install the full tensorrt")
    device = this_device()

    def add(folder: Path, fields: dict) -> dict:
        cache = folder / timing_cache_name(device.compute_capability, device.tensorrt_version)
        records = fields.get("engines") or []
        for graph in engine_graphs(bundle):
            precision = graph_precision(graph, fp16, device.compute_capability)
            announce(f"building the TensorRT {precision} engine for '{graph}' on {device.gpu_name} "
                      f"(compute {device.compute_capability}, TensorRT {device.tensorrt_version}); this takes minutes")
            rec = build_engine(bundle, graph, folder, device, precision, ranges, cache, version_compatible,
                               hardware_compatible)
            records = [r for r in records if r["file"] != rec.file] + [to_data(rec)]
        fields["engines"] = records
        return fields

    return extend_bundle(bundle, add)
