"""The `gen` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from .dream_cli import dream
from .errors import GenError, GenWarning, require_extra
from .kiosk_cli import kiosk

# OpenMP threads that spin while waiting make PyTorch ~10x slower whenever another program keeps a core
# busy (measured on 2 cores: 2.0 s instead of 0.2 s per dream tile, and the same on training steps);
# passive waiting costs nothing on an idle machine. It must be set before torch is first imported, so
# here, before any command runs; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True, soft_wrap=True)  # one line per message, whatever the width


@app.command()
def train(
    data: Path = typer.Argument(None, help="Folder of images (PNG/JPEG/WebP, searched recursively). "
                                           "Default: the small built-in emoji sample."),
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Run folder: checkpoints, grids, log."),
    preset: str = typer.Option(None, help="tiny | small | paper256 (see gen.train.config); default: small, "
                                          "or the run's own when resuming."),
    kimg: float = typer.Option(None, help="Train until this many thousand real images were shown."),
    resume: Path = typer.Option(None, help="Continue the run in this folder exactly where it stopped."),
    variant: str = typer.Option(None, help="stylegan2 (default) or stylegan1 (AdaIN)."),
    resolution: int = typer.Option(None, help="Override the preset's resolution (a power of two, 8-1024)."),
    batch: int = typer.Option(None, help="Total batch size (split across processes)."),
    snapshot_kimg: float = typer.Option(None, help="Write a snapshot grid and checkpoint every N kimg."),
    background: str = typer.Option("white", help="Colour that transparent pixels are composited on."),
    xflip: bool = typer.Option(None, "--xflip/--no-xflip", help="Add mirrored copies of the data."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    workers: int = typer.Option(2, help="DataLoader worker processes that decode images."),
    seed: int = typer.Option(0, help="Seed for weights, latents and data order."),
    metrics_kimg: float = typer.Option(None, show_default=False,
                                       help="Every N kimg, log fid_lite0/kid_lite0 of G_ema (as gen metrics) into "
                                            "log.jsonl and plot metrics.png."),
    metrics_num: int = typer.Option(1000, help="Pictures per set for --metrics-kimg."),
) -> None:
    """Train a StyleGAN on a folder of images (one process, or several under torchrun)."""
    require_extra("torch")
    from gen.train.trainer import train_from_cli

    train_from_cli(
        data=data, out=out, preset=preset, kimg=kimg, resume=resume, variant=variant,
        resolution=resolution, batch=batch, snapshot_kimg=snapshot_kimg, background=background,
        xflip=xflip, device=device, workers=workers, seed=seed, metrics_kimg=metrics_kimg, metrics_num=metrics_num,
    )


@app.command()
def sample(
    source: Path = typer.Argument(..., help="A bundle folder (torch-free), or a training run / checkpoint (PyTorch)."),
    out: Path = typer.Option(Path("samples.png"), "--out", "-o", help="Grid image to write."),
    outdir: Path = typer.Option(None, help="Also write one PNG per seed into this folder (seed0007.png, ...)."),
    seeds: str = typer.Option("0-15", help="Seeds, e.g. '0-15' or '1,5,9'."),
    psi: float = typer.Option(None, "--psi", "--trunc", help="Truncation psi: 1 = none, 0 = the average picture "
                                                             "(default: the bundle's, else 0.7)."),
    cutoff: int = typer.Option(None, help="Truncate only the first N style layers (default: all)."),
    noise_mode: str = typer.Option("const", help="const | random (drawn per seed: the same on a bundle and its "
                                                 "checkpoint) | none."),
    cols: int = typer.Option(None, help="Grid columns (default: square)."),
    engine: str = typer.Option("auto", help="Bundle engine: auto | cpu | cuda. Checkpoint device: cpu | cuda."),
) -> None:
    """Draw pictures for a list of seeds, from a bundle (runtime) or a checkpoint (PyTorch reference)."""
    from .sampling import sample_to_files

    written = sample_to_files(source, out, outdir=outdir, seeds=seeds, psi=psi, cutoff=cutoff,
                              noise_mode=noise_mode, cols=cols, engine=engine)
    err.print(f"wrote {written}")


@app.command()
def walk(
    bundle: Path = typer.Argument(..., help="A stylegan bundle folder."),
    seeds: str = typer.Option("3,17,42", help="Seeds the loop passes through, in order, back to the first; "
                                              "with --space w also w.npy files from gen project."),
    out: Path = typer.Option(Path("walk.mp4"), "--out", "-o", help="Video to write: .mp4 (H.264) or .gif."),
    seconds: float = typer.Option(None, show_default=False, help="Length of the loop (default: 4 s per seed)."),
    fps: float = typer.Option(30.0, help="Frames per second."),
    psi: float = typer.Option(None, "--psi", "--trunc", show_default=False,
                              help="Truncation psi (default: the bundle's, usually 0.7: varied yet clean)."),
    cutoff: int = typer.Option(None, show_default=False, help="Truncate only the first N style layers."),
    space: str = typer.Option("z", help="z: great-circle slerp between the seeds' latents (keeps them typical); "
                                        "w: straight lines between their styles (shorter, can look flatter)."),
    ease: bool = typer.Option(True, "--ease/--no-ease", help="Slow in and out of each seed, so it lingers there."),
    size: int = typer.Option(None, show_default=False, help="Upscale frames to this many pixels a side (Lanczos)."),
    noise_mode: str = typer.Option("const", help="const | none (random noise would flicker)."),
    engine: str = typer.Option("auto", help="auto | cpu | cuda."),
) -> None:
    """Render a seamless looping walk through seeds, torch-free; the frames at the seeds are gen sample's."""
    from .walk import WalkSettings, walk_to_file

    settings = WalkSettings(fps=fps, psi=psi, cutoff=cutoff, space=space, ease=ease, noise_mode=noise_mode, size=size)
    written, frames = walk_to_file(bundle, out, seeds, seconds, settings, engine)
    err.print(f"wrote {written} ({frames} frames, {frames / fps:.1f} s loop)")


@app.command()
def mix(
    bundle: Path = typer.Argument(..., help="A stylegan bundle folder."),
    rows: str = typer.Option("1,2,3", help="Row seeds: their pictures run down the left; they give the other styles."),
    cols: str = typer.Option("4,5,6", help="Column seeds: their pictures run along the top; they give --styles."),
    styles: str = typer.Option("fine", help="Styles taken from the column seeds: coarse (pose, shape), middle "
                                            "(features), fine (colour, texture) or ws indices A-B."),
    out: Path = typer.Option(Path("mix.png"), "--out", "-o", help="Grid image to write."),
    psi: float = typer.Option(None, "--psi", "--trunc", show_default=False,
                              help="Truncation psi (default: the bundle's, usually 0.7)."),
    size: int = typer.Option(None, show_default=False, help="Upscale each cell to this many pixels (Lanczos)."),
    noise_mode: str = typer.Option("const", help="const | none."),
    engine: str = typer.Option("auto", help="auto | cpu | cuda."),
) -> None:
    """Draw the StyleGAN style-mixing grid: each cell is its row seed with its column seed's --styles."""
    from .mix import mix_to_file

    written = mix_to_file(bundle, out, rows, cols, styles=styles, psi=psi, noise_mode=noise_mode, size=size,
                          engine=engine)
    err.print(f"wrote {written}")


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A training run folder or checkpoint .safetensors."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to create."),
    target: str = typer.Option("onnx", help="onnx | trt (TensorRT engines; needs tensorrt on a GPU)."),
    psi: float = typer.Option(0.7, help="Default truncation psi recorded in the bundle."),
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
    require_extra("torch")
    from gen.export.cli import export_stylegan_cli

    export_stylegan_cli(checkpoint, out, target=target, psi=psi, simplify=simplify, overwrite=overwrite,
                        fp16_graph=fp16_graph, fp16=fp16, trt_batch=trt_batch, trt_size=trt_size,
                        version_compatible=trt_version_compatible, hardware_compatible=trt_hardware_compatible,
                        license=license)


@app.command("export-dream")
def export_dream(
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to create."),
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
    from gen.export.cli import report_bundle
    from gen.export.dream import export_dream as export

    bundle, reports = export(out, backbone, layers, class_index, guide, weights, golden_image, simplify, overwrite)
    report_bundle(bundle, reports)


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    engine: str = typer.Option("auto", help="auto | cpu | cuda | ort-trt | trt, or 'all' for every engine here."),
) -> None:
    """Check a bundle on this machine: golden inputs through each engine vs the PyTorch outputs."""
    from .report import verify_report

    raise typer.Exit(0 if verify_report(bundle, engine) else 1)


@app.command()
def info(bundle: Path = typer.Argument(..., help="Bundle folder.")) -> None:
    """Print a bundle's manifest as readable tables."""
    from .report import info_report

    info_report(bundle)


@app.command()
def metrics(
    source: Path = typer.Argument(None, show_default=False,
                                  help="A training run, checkpoint or stylegan bundle (leave out with --real-floor "
                                       "to measure only the floor)."),
    data: Path = typer.Option(..., "--data", help="Folder of real images (composited and resized as for training)."),
    num: int = typer.Option(1000, help="Generated pictures (seeds 0..N-1), and real pictures per set."),
    psi: float = typer.Option(1.0, "--psi", "--trunc", help="Truncation psi (1 = none, as FID is usually measured)."),
    real_floor: bool = typer.Option(False, "--real-floor", help="Also measure N reals against N other reals."),
    out: Path = typer.Option(None, "--out", "-o", show_default=False, help="Also write the results to this JSON."),
    noise_mode: str = typer.Option("random", help="random (per seed: bundle = checkpoint) | const | none."),
    resolution: int = typer.Option(None, show_default=False,
                                   help="Reals' size without a generator (default: the first image's)."),
    background: str = typer.Option("white", help="Colour that transparent pixels are composited on."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (features, and a checkpoint's generator)."),
    seed: int = typer.Option(0, help="Seed for choosing the real pictures."),
) -> None:
    """fid_lite0 and kid_lite0: FID/KID on EfficientNet-Lite0 features (not comparable to published FID)."""
    require_extra("torch")
    from gen.train.metrics import metrics_from_cli

    metrics_from_cli(source, data, num, psi, real_floor, out, noise_mode, resolution, background, device, seed)


@app.command()
def project(
    photo: Path = typer.Argument(..., help="The photo to match (centre-cropped to the generator's size)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A training run folder or checkpoint .safetensors."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for projected.png, w.npy, compare.png, target.png."),
    steps: int = typer.Option(500, help="Optimisation steps."),
    w_plus: bool = typer.Option(False, "--w-plus", help="One w per style layer (closer, less editable); "
                                                        "w.npy is then [num_ws, w_dim], else [1, w_dim]."),
    optimize_noise: bool = typer.Option(False, "--optimize-noise",
                                        help="Also fit the noise maps (saved in noise.npz; w alone no longer "
                                             "reproduces the picture)."),
    video: Path = typer.Option(None, show_default=False, help="Write the search as a video (.mp4 or .gif)."),
    background: str = typer.Option("white", help="Colour that transparent pixels are composited on."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    seed: int = typer.Option(0, help="Seed for the noise added to w."),
    overwrite: bool = typer.Option(False, help="Replace an earlier projection in --out."),
) -> None:
    """Find the w whose picture matches a photo (PyTorch): writes the picture, w.npy and target|projection."""
    require_extra("torch")
    from gen.train.projector import project_from_cli

    result = project_from_cli(photo, checkpoint, out, steps, w_plus, optimize_noise, video, background, device,
                              seed, overwrite)
    err.print(f"wrote {out}/projected.png, w.npy, compare.png (PSNR {result.psnr:.2f} dB against the target)")


app.command()(dream)
app.command()(kiosk)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, GenWarning):
        err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)
    else:
        err.print(f"[yellow]warning:[/] {category.__name__}: {escape(str(message))}", highlight=False)


def main() -> None:
    warnings.showwarning = _one_line_warning
    try:
        app()
    except GenError as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(getattr(e, "status", 2))  # 2: a problem to fix; 1: a kiosk that gave up (a service restarts it)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":  # torchrun -m gen.runtime.cli train ...
    main()
