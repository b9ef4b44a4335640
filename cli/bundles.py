"""`gen export`, `gen export-dream` (they need the train extra), `gen verify` and `gen info` (torch-free)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from gen.runtime.errors import require_extra
from gen.runtime.latents import DEFAULT_PSI

from .output import err, out


def export(
    checkpoint: Path = typer.Argument(..., help="A training run folder or checkpoint .safetensors."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Bundle folder to create."),
    target: str = typer.Option("onnx", help="onnx | trt (TensorRT engines; needs tensorrt on a GPU)."),
    psi: float = typer.Option(DEFAULT_PSI, help="Default truncation psi recorded in the bundle."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify graphs with onnxslim."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle at --out."),
    fp16_graph: bool = typer.Option(False, "--fp16-graph", help="Add synthesis_fp16.onnx (FP16 inside, for GPUs)."),
    fp16: bool = typer.Option(None, "--fp16/--fp32", help="TensorRT precision (default: FP16 where the GPU is fast "
                                                          "at it; mapping stays FP32)."),
    trt_batch: str = typer.Option("", help="TensorRT batch MIN,OPT,MAX (default 1,8,32; smaller max above 256 px)."),
    trt_size: str = typer.Option("", help="TensorRT height/width MIN,OPT,MAX for dream graphs (default 64,512,1024)."),
    trt_version_compatible: bool = typer.Option(False, help="Build engines later TensorRT versions can run too."),
    trt_hardware_compatible: bool = typer.Option(False, help="Build engines any Ampere or later GPU can run."),
    license: str = typer.Option(None, "--license", show_default=False,
                                help="Licence of the weights, recorded in the manifest (credit the training data)."),
) -> None:
    """Turn a StyleGAN checkpoint into a bundle: ONNX graphs + golden parity data (+ engines)."""
    from gen.runtime.engines.trt_plan import parse_range

    # Ranges are read before minutes of export, so a typo costs nothing.
    ranges = {"batch": parse_range(trt_batch, "--trt-batch")} if trt_batch else {}
    if trt_size:
        ranges["height"] = ranges["width"] = parse_range(trt_size, "--trt-size")
    require_extra("torch")
    from gen.export.targets import export_stylegan_bundle

    done = export_stylegan_bundle(checkpoint, out_dir, target=target, psi=psi, simplify=simplify,
                                  overwrite=overwrite, fp16_graph=fp16_graph, fp16=fp16, ranges=ranges,
                                  version_compatible=trt_version_compatible,
                                  hardware_compatible=trt_hardware_compatible,
                                  announce=lambda line: err.print(escape(line)),
                                  **({"license": license} if license else {}))
    report_export(done.bundle, done.reports)
    if done.fp16_psnr_db is not None:
        out.print(f"added synthesis_fp16.onnx (worst PSNR vs PyTorch {done.fp16_psnr_db:.1f} dB on onnxruntime-cpu)")
    for r in done.engines:
        out.print(escape(f"engine {r.file} ({r.gpu_name}, {r.precision})"))


def export_dream(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Bundle folder to create."),
    backbone: str = typer.Option("efficientnet_lite0", help="efficientnet_lite0 | googlenet | inception_v3 | vgg16."),
    layers: str = typer.Option(None, show_default=False,
                               help="LAYER[:CH[+CH]][=WEIGHT],... as for gen dream. Default: the backbone's."),
    class_index: int = typer.Option(None, "--class", show_default=False, help="Dream on this ImageNet class."),
    guide: Path = typer.Option(None, show_default=False, help="Guide image (its features are baked in)."),
    weights: Path = typer.Option(None, show_default=False, help="Weight file (default: bundled, efficientnet_lite0)."),
    golden_image: Path = typer.Option(None, show_default=False,
                                      help="Photo for the golden data (default: a seeded 1/f-noise picture)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify graphs with onnxslim."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle at --out."),
) -> None:
    """Turn a DeepDream backbone + objective into a bundle: features and gradient graphs + golden data."""
    require_extra("torch")
    from gen.export.dream import export_dream as export_dream_bundle

    bundle, reports = export_dream_bundle(out_dir, backbone, layers, class_index, guide, weights, golden_image,
                                          simplify, overwrite)
    report_export(bundle, reports)


def report_export(bundle, reports: dict) -> None:
    for name, r in reports.items():
        slim = f", onnxslim {r.nodes_exported} -> {r.nodes_final} nodes" if r.simplified else ""
        out.print(f"{name}: {r.nodes_final} nodes{slim} ({r.seconds:.1f} s)")
    # write_bundle has already held the bundle to its golden data before putting it in place.
    out.print(escape(f"wrote {bundle.path} ({len(bundle.manifest.golden.cases)} golden cases pass on "
                     "onnxruntime-cpu)"))


def verify(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    engine: str = typer.Option("auto", help="auto | cpu | cuda | ort-trt | trt, or 'all' for every engine here."),
) -> None:
    """Check a bundle on this machine: golden inputs through each engine vs the PyTorch outputs."""
    from gen.runtime.report import verify_report

    lines, ok = verify_report(bundle, engine)
    for line in lines:
        out.print(line)
    raise typer.Exit(0 if ok else 1)


def info(bundle: Path = typer.Argument(..., help="Bundle folder.")) -> None:
    """Print a bundle's manifest as readable tables."""
    from gen.runtime.report import info_report

    for line in info_report(bundle):
        out.print(line)
