"""`gen import`: a StyleGAN trained elsewhere -> a gen run folder (needs the train extra)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from gen.runtime.errors import require_extra

from .output import err, out


def import_(
    source: Path = typer.Argument(..., help="A stylegan2-ada-pytorch or StyleGAN2 TensorFlow network pickle (.pkl), "
                                            "or a rosinality checkpoint (.pt). It is read as data: nothing in it is "
                                            "run."),
    run: Path = typer.Option(..., "--out", "-o", help="Run folder to write (its checkpoint.safetensors)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run already in --out."),
) -> None:
    """Import a StyleGAN2 model trained with NVlabs' or rosinality's code: say what it holds, write a run folder
    that gen sample, export, walk and mix take; refuse, in one line, what gen cannot represent."""
    require_extra("torch")
    from gen.train.importers import describe_lines, import_model

    found = import_model(source, run, overwrite=overwrite)
    for line in describe_lines(found):
        out.print(escape(line), soft_wrap=True)
    err.print(escape(f"wrote {found.checkpoint}; draw it with `gen sample {run}`, make a bundle with "
                     f"`gen export {run} --out BUNDLE`"))
