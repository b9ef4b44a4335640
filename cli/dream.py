"""`gen dream`: parse the options, pick an engine (a bundle's, torch-free, or PyTorch's), call
`gen.runtime.dream.run.dream_to_file`, print its lines."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

# The settings give the options' defaults; what runs a dream is imported when one runs.
from gen.runtime.dream.feedback import FeedbackSettings
from gen.runtime.dream.loop import DreamSettings
from gen.runtime.errors import GenError, require_extra

from .output import err
from .output import out as stdout

if TYPE_CHECKING:
    from gen.runtime.dream.loop import DreamEngine


def _torch_engine(backbone: str, weights: Path | None, layers: str | None, class_index: int | None,
                  guide: Path | None, device: str, threads: int) -> DreamEngine:
    require_extra("torch")  # (OMP_WAIT_POLICY is set when gen.cli is imported)
    from gen.train.dream_torch import torch_engine

    return torch_engine(backbone, layers, class_index, guide, weights, device, threads)


def _refuse_objective_options(given: dict) -> None:
    """A bundle's objective was fixed at export: options that would change it are mistakes, not no-ops."""
    if names := [name for name, value in given.items() if value is not None]:
        raise GenError(f"{', '.join(names)} cannot change a bundle's objective (fixed at export); drop "
                       f"{'it' if len(names) == 1 else 'them'}, or export another bundle with gen export-dream")


def _list_layers(backbone: str) -> None:
    require_extra("torch")
    from rich.table import Table

    from gen.train.backbones import backbone_class, layer_table

    default = backbone_class(backbone).default_layer
    table = Table(caption=f"{backbone}: --layers LAYER[:CHANNEL][=WEIGHT]; sizes for a 224x224 image")
    for column in ("layer", "channels", "size"):
        table.add_column(column)
    for layer, shape in layer_table(backbone):
        size = f"{shape[2]}x{shape[1]}" if len(shape) == 3 else "-"
        name = f"{layer} (default)" if layer == default else layer
        table.add_row(name, str(shape[0]), size)
    stdout.print(table)


def _say(line: str) -> None:
    err.print(escape(line))


def dream(
    image: Path = typer.Argument(None, help="The picture to dream on (PNG, JPEG, WebP, ...).", show_default=False),
    out: Path = typer.Option(None, "--out", "-o", show_default=False,
                             help="Output: an image, or .gif/.mp4 with --frames. "
                                  "Default: IMAGE-dream.png in the current folder (never replacing a file)."),
    backbone: str = typer.Option("efficientnet_lite0", help="efficientnet_lite0 | googlenet | inception_v3 | vgg16."),
    weights: Path = typer.Option(None, show_default=False,
                                 help="Weight file: .pth (loaded with weights_only) or .safetensors with "
                                      "torchvision's key names. Default: bundled ImageNet weights "
                                      "(efficientnet_lite0 only)."),
    layers: str = typer.Option(None, show_default=False,
                               help="What to dream on: LAYER[:CH[+CH]][=WEIGHT],... e.g. 'block9' or "
                                    "'block5=1,block10:12=0.5'. Default: the backbone's default layer."),
    class_index: int = typer.Option(None, "--class", show_default=False,
                                    help="Dream on an ImageNet class instead (0-999; 281 = tabby cat)."),
    guide: Path = typer.Option(None, show_default=False,
                               help="Guide image: steer the layers' features towards those of this picture."),
    mask: Path = typer.Option(None, show_default=False,
                              help="Dream only where this image is white; where black, pixels stay as they were."),
    octaves: int = typer.Option(DreamSettings.octaves, help="Pyramid levels: more gives larger patterns."),
    octave_scale: float = typer.Option(DreamSettings.octave_scale, help="Size ratio between octaves."),
    iterations: int = typer.Option(DreamSettings.iterations, help="Gradient steps per octave."),
    step: float = typer.Option(DreamSettings.step, help="Step size (pixels in 0-1; the gradient is normalised)."),
    norm: str = typer.Option(DreamSettings.norm, help="Gradient normalisation: mean | std | none."),
    jitter: int = typer.Option(DreamSettings.jitter, help="Random roll in pixels before each step."),
    tile: int = typer.Option(DreamSettings.tile, help="Largest tile side for big images (0 = no tiles; more memory)."),
    seed: int = typer.Option(DreamSettings.seed, help="Seed of the random jitter and tile shifts."),
    # 0 is the command line's own: no animation (FeedbackSettings has no such value).
    frames: int = typer.Option(0, help="Make a zoom/feedback animation of this many frames."),
    zoom: float = typer.Option(FeedbackSettings.zoom, help="Animation: zoom per frame."),
    rotate: float = typer.Option(FeedbackSettings.rotate, help="Animation: degrees per frame, counter-clockwise."),
    blend: float = typer.Option(FeedbackSettings.blend, help="Animation: share of the source image mixed into each "
                                                             "frame."),
    fps: float = typer.Option(FeedbackSettings.fps, help="Animation: frames per second."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: int = typer.Option(0, help="CPU threads for the network (0 = all cores). On a machine "
                                        "busy with other work, 1 can be many times faster."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow replacing an existing output (or the input)."),
    list_layers: bool = typer.Option(False, "--list-layers", help="Print the backbone's layers and exit."),
    bundle: Path = typer.Option(None, show_default=False,
                                help="Dream with an exported dream bundle instead of PyTorch (torch-free; "
                                     "its backbone and objective were chosen at export)."),
    engine_name: str = typer.Option("auto", "--engine", help="With --bundle: auto | cpu | cuda | ort-trt | trt."),
) -> None:
    """DeepDream: amplify what a CNN sees in a picture (octaves, jitter, tiles; mask, guide, animation)."""
    from gen.runtime.dream.engine import bundle_engine
    from gen.runtime.dream.run import dream_to_file

    if list_layers:
        _list_layers(backbone)
        return
    if image is None:
        raise GenError("give an image to dream on (or --list-layers to see the layers)")
    if not 0 <= threads <= 1024:
        raise GenError(f"--threads takes 0 (all cores) or a number of threads, got {threads}")
    feedback = FeedbackSettings(frames, zoom, rotate, blend, fps) if frames else None
    settings = DreamSettings(octaves, octave_scale, iterations, step, norm, jitter, tile, seed=seed)
    if bundle is not None:
        _refuse_objective_options({"--layers": layers, "--class": class_index, "--guide": guide,
                                   "--weights": weights})
        open_engine = partial(bundle_engine, bundle, engine_name, threads)
    else:
        open_engine = partial(_torch_engine, backbone, weights, layers, class_index, guide, device, threads)
    result = dream_to_file(image, open_engine, out, settings, feedback, mask, overwrite, announce=_say)
    _say(result.message)
