"""The `gen` command: a thin layer on top that parses arguments and calls the library.

One module per command group: train (train, metrics, project), stylegan (sample, walk, mix), bundles
(export, export-dream, verify, info), importing (import), dream, kiosk. Nothing below imports this package.
A group's module is imported only when one of its commands runs, or when `gen --help` lists them all: `gen
sample` does not wait for the kiosk's, dream's or training's imports.
"""

from __future__ import annotations

import errno
import gc
import importlib
import os
import sys
import warnings
from collections.abc import Iterator, MutableMapping

# OpenMP threads that spin while waiting make PyTorch ~10x slower whenever another program keeps a core
# busy (measured on 2 cores: 2.0 s instead of 0.2 s per dream tile, and the same on training steps);
# passive waiting costs nothing on an idle machine. It must be set before torch is first imported, so
# here, before any command runs; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Loading modules makes ~40k objects that live until the end, and hardly any garbage: the collections that their
# number sets off while they load find next to nothing, yet cost ~20 ms of a ~0.4 s `gen sample` (gc.callbacks: 26
# ms of collections in all before, 7 ms with this). So the collector pauses while modules load, and what they made is
# frozen (kept out of every later collection, the last ones at exit above all) before it runs again: gen.cli's
# modules here; then, from main() on, Typer's and the command's (_Commands), frozen once the command's module is
# loaded. It runs again before the command does, so the command's own garbage is collected (and finalized) as usual;
# and whenever main() returns or raises. (Importing gen.cli as a library freezes the objects alive then: they are
# never collected, as objects alive until the end need not be.)
_paused = False


def _pause_collection() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def _resume_collection(freeze: bool = True) -> None:
    """Collect again, as before the pause; what the pause's imports made frozen first (else the first collection
    would walk it all at once)."""
    global _paused
    if freeze:
        gc.freeze()
    if _paused:
        _paused = False
        gc.enable()


_pause_collection()
try:
    import typer  # noqa: E402 (below the setting above, as is everything that could import torch)
    from rich.markup import escape
    from typer.core import TyperGroup

    from gen.runtime.errors import GenError, GenWarning
    from gen.runtime.files import FULL_CODES, output_error, write_error_code
    from gen.runtime.memory import keep_freed_memory

    from .output import err
finally:
    _resume_collection()

# command -> (module of gen.cli, function), in the order `gen --help` lists them
COMMANDS = {"train": ("train", "train"), "sample": ("stylegan", "sample"), "walk": ("stylegan", "walk"),
            "mix": ("stylegan", "mix"), "export": ("bundles", "export"), "export-dream": ("bundles", "export_dream"),
            "verify": ("bundles", "verify"), "info": ("bundles", "info"), "metrics": ("train", "metrics"),
            "project": ("train", "project"), "dream": ("dream", "dream"), "kiosk": ("kiosk", "kiosk"),
            "import": ("importing", "import_")}


class _Commands(MutableMapping):
    """The group's commands by name, each made (its module imported, its signature read by Typer) when first
    looked up: running one makes only that one; `gen --help` makes them all."""

    def __init__(self) -> None:
        self.made: dict = {}

    def __getitem__(self, name: str):
        if name not in self.made:
            module, function = COMMANDS[name]  # KeyError: no such command
            _pause_collection()  # (already, from main(); again for each command `gen --help` makes after the first)
            try:
                one = typer.Typer(add_completion=False, rich_markup_mode=app.rich_markup_mode,
                                  pretty_exceptions_short=app.pretty_exceptions_short)
                one.command(name)(getattr(importlib.import_module(f"{__name__}.{module}"), function))
                self.made[name] = typer.main.get_command(one)  # (a Typer of one command makes just that command)
            finally:
                # Frozen now, before the command runs, not at exit: frozen at exit, the command's own cyclic garbage
                # would never be collected nor finalized, for 2 ms (the final collection: 2 ms after this freeze,
                # 0.1 ms after one at exit, 35 ms with none).
                _resume_collection()
        return self.made[name]

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self.made

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(COMMANDS), **self.made})

    def __len__(self) -> int:
        return len(set(COMMANDS) | set(self.made))

    def __setitem__(self, name: str, command) -> None:
        self.made[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("gen's commands cannot be removed")


class _Group(TyperGroup):
    """gen's command group, whose commands are made only when one runs or all are listed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.commands = _Commands()

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)  # the names alone (TyperGroup's would make every command)


def _group() -> None:
    """(A Typer app with a callback is a group even with no command registered: _Group brings the commands.)"""


app = typer.Typer(cls=_Group, callback=_group, add_completion=False, no_args_is_help=True,
                  help="Train StyleGAN and DeepDream in PyTorch, export them, run them torch-free.")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, GenWarning):
        err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)
    else:
        err.print(f"[yellow]warning:[/] {category.__name__}: {escape(str(message))}", highlight=False)


def main() -> None:
    warnings.showwarning = _one_line_warning
    keep_freed_memory()  # every command: a process-wide setting (see runtime.memory)
    _pause_collection()  # until the command's module is loaded (see the top of this module)
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
    finally:
        _resume_collection(freeze=False)  # (when no command was made: `gen` alone, a usage error)


