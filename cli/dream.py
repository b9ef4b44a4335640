"""`gen dream`: parse arguments, check them all before any work, pick an engine, run the one dreaming loop.

The engine is the only part that differs between the PyTorch reference and the torch-free runtime:
a `gradient(image) -> (grad, objective)` function. Today it is the PyTorch one; a bundle engine
(ONNX Runtime, TensorRT) plugs in at `_engine` without touching the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gen.runtime.dream.feedback import FeedbackSettings, feedback_frames
from gen.runtime.dream.loop import DreamSettings, GradientFn, StepInfo, count_steps, load_mask
from gen.runtime.dream.loop import dream as dream_image
from gen.runtime.errors import GenError, require_extra
from gen.runtime.files import check_output_path
from gen.runtime.images import load_image, save_image
from gen.runtime.progress import progress_bar, rate_text
from gen.runtime.video import VIDEO_SUFFIXES, check_video_path, write_video

STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
err = Console(stderr=True, soft_wrap=True, highlight=False)


@dataclass
class Engine:
    gradient: GradientFn
    min_side: int  # smallest image side the network takes
    description: str


def _torch_engine(backbone: str, weights: Path | None, layers: str | None, class_index: int | None,
                  guide: Path | None, device: str, threads: int) -> Engine:
    require_extra("torch")  # (OMP_WAIT_POLICY is set when gen.cli is imported)
    import torch

    from gen.train.devices import resolve_device
    from gen.train.dream_torch import build_objective, torch_gradient

    if threads:
        torch.set_num_threads(threads)

    objective = build_objective(backbone, layers, class_index, guide, weights)
    dev = resolve_device(device)
    what = ", ".join(map(str, objective.terms)) or f"class {class_index}"
    return Engine(torch_gradient(objective, dev), objective.backbone.min_size,
                  f"{backbone} ({what}{', guided' if guide else ''}) on {dev}")


def _bundle_engine(bundle: Path, engine: str, fixed: dict) -> Engine:
    """The torch-free engine: the bundle's gradient graph. Its objective was fixed at export."""
    if given := [name for name, value in fixed.items() if value is not None]:
        raise GenError(f"{', '.join(given)} cannot change a bundle's objective (fixed at export); drop "
                       f"{'it' if len(given) == 1 else 'them'}, or export another bundle with gen export-dream")
    from gen.runtime.dream.engine import open_dream_bundle

    return Engine(*open_dream_bundle(bundle, engine))


def _list_layers(backbone: str) -> None:
    require_extra("torch")
    from gen.train.backbones import backbone_class, layer_table

    default = backbone_class(backbone).default_layer
    table = Table(caption=f"{backbone}: --layers LAYER[:CHANNEL][=WEIGHT]; sizes for a 224x224 image")
    for column in ("layer", "channels", "size"):
        table.add_column(column)
    for layer, shape in layer_table(backbone):
        size = f"{shape[2]}x{shape[1]}" if len(shape) == 3 else "-"
        name = f"{layer} (default)" if layer == default else layer
        table.add_row(name, str(shape[0]), size)
    Console().print(table)


def _default_output(image: Path, suffix: str) -> Path:
    """IMAGE-dream.png in the current folder, or -dream-2, -dream-3, ...: never an existing file."""
    for n in range(1, 10_000):
        path = Path(f"{image.stem}-dream{'' if n == 1 else f'-{n}'}{suffix}")
        if not path.exists():
            return path
    raise GenError(f"too many dreams of '{image}' in this folder; give --out")


def _check_output(image: Path, out: Path | None, frames: int, overwrite: bool) -> Path:
    if out is None:
        return _default_output(image, ".gif" if frames else ".png")
    suffix = out.suffix.lower()
    if frames and suffix not in VIDEO_SUFFIXES:
        raise GenError(f"'{out}': with --frames the output is an animation, .gif or .mp4")
    if not frames and suffix in VIDEO_SUFFIXES:
        raise GenError(f"'{out}' is an animation; pass --frames N (and --zoom, --rotate) to make one")
    if not frames and suffix not in STILL_SUFFIXES:
        raise GenError(f"cannot write '{suffix or out.name}' images; use .png, .jpg or .webp")
    if out.exists() and image.exists() and out.resolve() == image.resolve() and not overwrite:
        raise GenError(f"'{out}' is the input image; pass --overwrite to replace it, or choose another --out")
    if frames:
        check_video_path(out)
    return check_output_path(out, overwrite=overwrite)


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
    octaves: int = typer.Option(4, help="Pyramid levels: more gives larger patterns."),
    octave_scale: float = typer.Option(1.4, help="Size ratio between octaves."),
    iterations: int = typer.Option(10, help="Gradient steps per octave."),
    step: float = typer.Option(0.008, help="Step size (pixels in 0-1; the gradient is normalised)."),
    norm: str = typer.Option("mean", help="Gradient normalisation: mean | std | none."),
    jitter: int = typer.Option(32, help="Random roll in pixels before each step."),
    tile: int = typer.Option(512, help="Largest tile side for big images (0 = no tiles; more memory)."),
    seed: int = typer.Option(0, help="Seed of the random jitter and tile shifts."),
    frames: int = typer.Option(0, help="Make a zoom/feedback animation of this many frames."),
    zoom: float = typer.Option(1.05, help="Animation: zoom per frame."),
    rotate: float = typer.Option(0.0, help="Animation: degrees per frame, counter-clockwise."),
    blend: float = typer.Option(0.0, help="Animation: share of the source image mixed into each frame."),
    fps: float = typer.Option(12.0, help="Animation: frames per second."),
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
    if list_layers:
        _list_layers(backbone)
        return
    if image is None:
        raise GenError("give an image to dream on (or --list-layers to see the layers)")
    feedback = FeedbackSettings(frames, zoom, rotate, blend, fps).check() if frames else None
    settings = DreamSettings(octaves, octave_scale, iterations, step, norm, jitter, tile, seed=seed).check()
    out = _check_output(image, out, frames, overwrite)
    rgb = load_image(image, min_size=settings.min_side)
    height, width = rgb.shape[:2]
    mask_array = load_mask(mask, height, width) if mask is not None else None
    if bundle is not None:
        engine = _bundle_engine(bundle, engine_name, {"--layers": layers, "--class": class_index, "--guide": guide,
                                                      "--weights": weights})
    else:
        engine = _torch_engine(backbone, weights, layers, class_index, guide, device, threads)
    settings = DreamSettings(**{**settings.__dict__, "min_side": engine.min_side}).check()
    total = count_steps(height, width, settings) * (frames or 1)  # also refuses too-small images
    err.print(escape(f"dreaming {width}x{height} with {engine.description}: {total} steps"))

    start = time.perf_counter()
    with progress_bar("step") as bar:
        task = bar.add_task("dream", total=total, rate="", info="")
        done = 0

        def on_step(s: StepInfo) -> None:
            nonlocal done
            done += 1
            bar.update(task, advance=1, rate=rate_text(done, time.perf_counter() - start, "step"),
                       info=f"octave {s.octave}/{s.octaves} {s.size[1]}x{s.size[0]} objective {s.objective:.4g}")

        if feedback is None:
            save_image(out, dream_image(rgb, engine.gradient, settings, mask_array, on_step))
        else:
            written = write_video(out, feedback_frames(rgb, engine.gradient, settings, feedback, mask_array,
                                                       on_step), feedback.fps)
    what = f"{written} frames" if feedback is not None else f"{width}x{height}"
    err.print(escape(f"wrote {out} ({what}, {time.perf_counter() - start:.1f} s)"))
