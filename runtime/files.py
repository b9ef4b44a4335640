"""Atomic writes: a crash or Ctrl-C never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import GenError


def check_output_path(path: str | Path, overwrite: bool = True) -> Path:
    """Validate an output path before any work is done, so a typo costs nothing."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise GenError(f"output folder '{parent}' does not exist; create it first or choose another path")
    if path.is_dir():
        raise GenError(f"output '{path}' is a folder; give a file name")
    if path.exists() and not overwrite:
        raise GenError(f"'{path}' already exists; pass --overwrite to replace it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
