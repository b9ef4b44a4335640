"""`gen train`, `gen metrics`, `gen project`: the PyTorch side (they need the train extra)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from gen.runtime.errors import require_extra
from gen.train.config import ProjectSettings  # torch-free: the defaults of gen project

from .output import err


def train(
    data: Path = typer.Argument(None, help="Folder of images (PNG/JPEG/WebP/BMP/TIFF, searched recursively). "
                                           "Default: the small built-in emoji sample."),
    out_dir: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Run folder: checkpoints, grids, log."),
    preset: str = typer.Option(None, help="tiny | small | paper256 (see gen.train.config); default: small, "
                                          "or the run's own when resuming."),
    kimg: float = typer.Option(None, help="Train until this many thousand real images were shown."),
    resume: Path = typer.Option(None, help="Continue the run in this folder exactly where it stopped; a model from "
                                           "gen import is fine-tuned on DATA."),
    variant: str = typer.Option(None, help="stylegan2 (default), stylegan1 (AdaIN), stylegan3-t or stylegan3-r "
                                           "(alias-free, NVlabs' configs T and R)."),
    resolution: int = typer.Option(None, help="Override the preset's resolution (a power of two, 8-1024)."),
    batch: int = typer.Option(None, help="Total batch size (split across processes)."),
    snapshot_kimg: float = typer.Option(None, help="Write a snapshot grid and checkpoint every N kimg."),
    background: str = typer.Option("white", help="Colour that transparent pixels are composited on."),
    xflip: bool = typer.Option(None, "--xflip/--no-xflip", help="Add mirrored copies of the data."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    workers: int = typer.Option(2, help="DataLoader worker processes that decode images."),
    seed: int = typer.Option(0, help="Seed for weights, latents and data order."),
    metrics_kimg: float = typer.Option(None, show_default=False,
                                       help="Every N kimg, log the --metric figures of G_ema (as gen metrics) into "
                                            "log.jsonl and plot them in metrics.png."),
    metrics_num: int = typer.Option(1000, help="Pictures per set for --metrics-kimg."),
    metric: str = typer.Option("all", "--metric",
                               help="With --metrics-kimg: fid, kid, fid_lite0, kid_lite0, comma-separated, or all "
                                    "(fid and kid need the metrics extra)."),
    fresh_d: bool = typer.Option(False, "--fresh-d", help="Fine-tuning an import whose file had no usable "
                                                          "discriminator: start D from random weights."),
    overwrite: bool = typer.Option(False, help="Start afresh in an --out that holds an earlier run: its checkpoint, "
                                               "log.jsonl and pictures are deleted first."),
) -> None:
    """Train a StyleGAN on a folder of images (one process, or several under torchrun)."""
    require_extra("torch")
    from gen.runtime.images import parse_color
    from gen.train.trainer import run_summary, start_or_resume

    state = start_or_resume(
        data, out_dir, preset=preset, resume=resume, background=parse_color(background), device=device,
        model_overrides={"variant": variant, "resolution": resolution},
        train_overrides={"kimg": kimg, "batch": batch, "snapshot_kimg": snapshot_kimg, "xflip": xflip},
        workers=workers, seed=seed, metrics_kimg=metrics_kimg, metrics_num=metrics_num, metrics=metric,
        overwrite=overwrite, fresh_d=fresh_d)
    if state.procs.is_main:
        print(run_summary(state, resume or out_dir))


def metrics(
    source: Path = typer.Argument(None, show_default=False,
                                  help="A training run, checkpoint or stylegan bundle (leave out with --real-floor "
                                       "to measure only the floor)."),
    data: Path = typer.Option(..., "--data", help="Folder of real images (composited and resized as for training)."),
    num: int = typer.Option(1000, help="Generated pictures (seeds 0..N-1), and real pictures per set."),
    psi: float = typer.Option(1.0, "--psi", "--trunc", help="Truncation psi (1 = none, as FID is usually measured)."),
    real_floor: bool = typer.Option(False, "--real-floor", help="Also measure N reals against N other reals."),
    out_file: Path = typer.Option(None, "--out", "-o", show_default=False, help="Also write the results to this JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow replacing an existing --out."),
    noise_mode: str = typer.Option("random", help="random (per seed: bundle = checkpoint) | const | none."),
    resolution: int = typer.Option(None, show_default=False,
                                   help="Reals' size without a generator (default: the first image's)."),
    background: str = typer.Option("white", help="Colour that transparent pixels are composited on."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (features, and a checkpoint's generator)."),
    seed: int = typer.Option(0, help="Seed for choosing the real pictures."),
    metric: str = typer.Option("all", "--metric",
                               help="fid, kid (standard: Inception v3, NVlabs' conventions; the metrics extra), "
                                    "fid_lite0, kid_lite0 (EfficientNet-Lite0, ~6x faster, not comparable to "
                                    "published figures): comma-separated, or all."),
) -> None:
    """FID and KID: standard (fid, kid) and fast (fid_lite0, kid_lite0), with the real-vs-real floor."""
    require_extra("torch")
    from gen.runtime.images import parse_color
    from gen.train.metrics import format_metrics, measure_to_file

    result = measure_to_file(source, data, out_file, overwrite, num=num, psi=psi, real_floor=real_floor,
                             noise_mode=noise_mode, device=device, resolution=resolution,
                             background=parse_color(background), seed=seed, metrics=metric)
    for line in format_metrics(result):
        print(line)


def project(
    photo: Path = typer.Argument(..., help="The photo to match (centre-cropped to the generator's size)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A training run folder or checkpoint .safetensors."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for projected.png, w.npy, compare.png, target.png."),
    steps: int = typer.Option(ProjectSettings.steps, help="Optimisation steps."),
    w_plus: bool = typer.Option(ProjectSettings.w_plus, "--w-plus",
                                help="One w per style layer (closer, less editable); w.npy is then \\[num_ws, w_dim], "
                                     "else \\[1, w_dim]."),
    optimize_noise: bool = typer.Option(ProjectSettings.optimize_noise, "--optimize-noise",
                                        help="Also fit the noise maps (saved in noise.npz; w alone no longer "
                                             "reproduces the picture)."),
    video: Path = typer.Option(None, show_default=False, help="Write the search as a video (.mp4 or .gif)."),
    background: str = typer.Option("white", help="Colour that transparent pixels are composited on."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    seed: int = typer.Option(0, help="Seed for the noise added to w."),
    overwrite: bool = typer.Option(False, help="Allow replacing the files of an earlier projection in --out (and "
                                               "an existing --video)."),
) -> None:
    """Find the w whose picture matches a photo (PyTorch): writes the picture, w.npy and target|projection."""
    require_extra("torch")
    from gen.runtime.images import parse_color
    from gen.train.projector import project_to_folder

    settings = ProjectSettings(steps=steps, w_plus=w_plus, optimize_noise=optimize_noise)
    result = project_to_folder(photo, checkpoint, out_dir, settings, video, parse_color(background), device, seed,
                               overwrite)
    err.print(escape(f"wrote {out_dir}/projected.png, w.npy, compare.png (PSNR {result.psnr:.2f} dB against "
                     "the target)"))
