"""`gen sample`, `gen walk`, `gen mix`: pictures from a StyleGAN bundle (torch-free) or, for sample, from a
training run's checkpoint (the PyTorch reference)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer
from rich.markup import escape

from gen.runtime.bundle import has_manifest
from gen.runtime.errors import require_extra
from gen.runtime.latents import DEFAULT_PSI
from gen.runtime.stylegan.walk import WalkSettings

from .output import err


def class_option():
    """--class, as every command that draws StyleGAN pictures takes it (gen kiosk too)."""
    return typer.Option(None, "--class", show_default=False,
                        help="Class of a class-conditional model, 0..classes-1 (required for one, refused otherwise).")


def sample(
    source: Path = typer.Argument(..., help="A bundle folder (torch-free), or a training run / checkpoint (PyTorch)."),
    out: Path = typer.Option(Path("samples.png"), "--out", "-o", help="Grid image to write."),
    outdir: Path = typer.Option(None, help="Also write one PNG per seed into this folder (seed0007.png, ...)."),
    seeds: str = typer.Option("0-15", help="Seeds, e.g. '0-15' or '1,5,9'."),
    psi: float = typer.Option(None, "--psi", "--trunc", help="Truncation psi: 1 = none, 0 = the average picture "
                                                             f"(default: the bundle's, else {DEFAULT_PSI:g})."),
    cutoff: int = typer.Option(None, help="Truncate only the first N style layers (default: all)."),
    noise_mode: str = typer.Option("const", help="const | random (drawn per seed: the same on a bundle and its "
                                                 "checkpoint) | none. StyleGAN3 has no noise: all draw alike."),
    cols: int = typer.Option(None, help="Grid columns (default: square)."),
    engine: str = typer.Option("auto", help="Bundle engine: auto | cpu | cuda. Checkpoint device: cpu | cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow replacing existing files (grid, seedNNNN.png)."),
    class_idx: int = class_option(),
    pan: str = typer.Option(None, show_default=False,
                            help="StyleGAN3: move the camera by X,Y picture widths (e.g. 0.25,-0.1)."),
    rotate: float = typer.Option(None, show_default=False, help="StyleGAN3: turn the camera by this many degrees."),
) -> None:
    """Draw pictures for a list of seeds, from a bundle (runtime) or a checkpoint (PyTorch reference)."""
    from gen.runtime.stylegan.sample import bundle_images, parse_camera, sample_to_files

    camera = parse_camera(pan, rotate)
    if has_manifest(source):  # a broken bundle says what is wrong with it, not "install torch"
        draw = partial(bundle_images, source, psi=psi, cutoff=cutoff, noise_mode=noise_mode, engine=engine,
                       class_idx=class_idx, camera=camera)
    else:
        require_extra("torch")
        from gen.train.sample import checkpoint_images

        device = "cpu" if engine in ("auto", "cpu") else engine  # a checkpoint's --engine names a torch device
        draw = partial(checkpoint_images, source, psi=psi, cutoff=cutoff, noise_mode=noise_mode, device=device,
                       class_idx=class_idx, camera=camera)
    err.print(escape(f"wrote {sample_to_files(draw, seeds, out, outdir, cols, overwrite=overwrite)}"))


def walk(
    bundle: Path = typer.Argument(..., help="A stylegan bundle folder."),
    seeds: str = typer.Option("3,17,42", help="Seeds the loop passes through, in order, back to the first; "
                                              "with --space w also w.npy files from gen project."),
    out: Path = typer.Option(Path("walk.mp4"), "--out", "-o", help="Video to write: .mp4 (H.264) or .gif."),
    seconds: float = typer.Option(None, show_default=False, help="Length of the loop (default: "
                                                                 f"{WalkSettings.seconds_per_seed:g} s per seed)."),
    fps: float = typer.Option(WalkSettings.fps, help="Frames per second."),
    psi: float = typer.Option(WalkSettings.psi, "--psi", "--trunc", show_default=False,
                              help=f"Truncation psi (default: the bundle's, usually {DEFAULT_PSI:g}: varied yet "
                                   "clean)."),
    cutoff: int = typer.Option(WalkSettings.cutoff, show_default=False,
                                help="Truncate only the first N style layers."),
    space: str = typer.Option(WalkSettings.space,
                              help="z: great-circle slerp between the seeds' latents (keeps them typical); "
                                   "w: straight lines between their styles (shorter, can look flatter)."),
    ease: bool = typer.Option(WalkSettings.ease, "--ease/--no-ease",
                              help="Slow in and out of each seed, so it lingers there."),
    size: int = typer.Option(WalkSettings.size, show_default=False,
                              help="Upscale frames to this many pixels a side (Lanczos)."),
    noise_mode: str = typer.Option(WalkSettings.noise_mode, help="const | none (random noise would flicker)."),
    engine: str = typer.Option("auto", help="auto | cpu | cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow replacing an existing --out."),
    class_idx: int = class_option(),
    pan: str = typer.Option(None, show_default=False,
                            help="StyleGAN3: the camera drifts out to X,Y picture widths (e.g. 0.5,0.2) and back "
                                 "over the loop."),
    rotate: float = typer.Option(WalkSettings.rotate, help="StyleGAN3: the camera turns this many degrees and back "
                                                           "over the loop; 360 (or whole turns): round and round."),
) -> None:
    """Render a seamless looping walk through seeds, torch-free; the frames at the seeds are gen sample's (with
    --pan/--rotate, the first one)."""
    from gen.runtime.stylegan.camera import parse_pan
    from gen.runtime.stylegan.walk import walk_to_file

    settings = WalkSettings(fps=fps, psi=psi, cutoff=cutoff, space=space, ease=ease, noise_mode=noise_mode, size=size,
                            class_idx=class_idx, pan=parse_pan(pan), rotate=rotate)
    written, frames = walk_to_file(bundle, out, seeds, seconds, settings, engine, overwrite=overwrite)
    err.print(escape(f"wrote {written} ({frames} frames, {frames / fps:.1f} s loop)"))


def mix(
    bundle: Path = typer.Argument(..., help="A stylegan bundle folder."),
    rows: str = typer.Option("1,2,3", help="Row seeds: their pictures run down the left; they give the other styles."),
    cols: str = typer.Option("4,5,6", help="Column seeds: their pictures run along the top; they give --styles."),
    styles: str = typer.Option("fine", help="Styles taken from the column seeds: coarse (pose, shape), middle "
                                            "(features), fine (colour, texture) or ws indices A-B."),
    out: Path = typer.Option(Path("mix.png"), "--out", "-o", help="Grid image to write."),
    psi: float = typer.Option(None, "--psi", "--trunc", show_default=False,
                              help=f"Truncation psi (default: the bundle's, usually {DEFAULT_PSI:g})."),
    size: int = typer.Option(None, show_default=False, help="Upscale each cell to this many pixels (Lanczos)."),
    noise_mode: str = typer.Option("const", help="const | none."),
    engine: str = typer.Option("auto", help="auto | cpu | cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow replacing an existing --out."),
    class_idx: int = class_option(),
) -> None:
    """Draw the StyleGAN style-mixing grid: each cell is its row seed with its column seed's --styles."""
    from gen.runtime.stylegan.mix import mix_to_file

    written = mix_to_file(bundle, out, rows, cols, styles=styles, psi=psi, noise_mode=noise_mode, size=size,
                          engine=engine, overwrite=overwrite, class_idx=class_idx)
    err.print(escape(f"wrote {written}"))
