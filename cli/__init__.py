"""The `gen` command: a thin layer on top that parses arguments and calls the library.

One module per command group: train (train, metrics, project), stylegan (sample, walk, mix), bundles
(export, export-dream, verify, info), importing (import), dream, kiosk. Nothing below imports this package.
"""

from __future__ import annotations

import errno
import os
import sys
import warnings

# OpenMP threads that spin while waiting make PyTorch ~10x slower whenever another program keeps a core
# busy (measured on 2 cores: 2.0 s instead of 0.2 s per dream tile, and the same on training steps);
# passive waiting costs nothing on an idle machine. It must be set before torch is first imported, so
# here, before any command runs; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402 (below the setting above, as is everything that could import torch)
from rich.markup import escape

from gen.runtime.errors import GenError, GenWarning
from gen.runtime.files import FULL_CODES, output_error, write_error_code

from . import bundles, dream, importing, kiosk, stylegan, train
from .output import err

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train StyleGAN and DeepDream in PyTorch, export them, run them torch-free.")
for command in (train.train, stylegan.sample, stylegan.walk, stylegan.mix, bundles.export):
    app.command()(command)
app.command("export-dream")(bundles.export_dream)
for command in (bundles.verify, bundles.info, train.metrics, train.project, dream.dream, kiosk.kiosk):
    app.command()(command)
app.command("import")(importing.import_)


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
    except OSError as e:
        # A full or read-only disk that no writer of ours caught (a library writing a bundle's graphs into its
        # temporary folder, which is removed on the way out) is still one line. Not a refusal (EACCES): that may
        # be an input's; any other OSError stays a traceback.
        if write_error_code(e) not in (*FULL_CODES, errno.EROFS):
            raise
        err.print(f"[red]error:[/] {escape(str(output_error(e.filename, e)))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


