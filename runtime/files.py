"""Atomic writes: a crash or Ctrl-C never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
import stat
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


def _proc_umask() -> int | None:
    """The umask as Linux (4.7+) shows it in /proc/self/status, read without changing it; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_once() -> int:
    """Where /proc does not say: the only portable way, setting the umask and putting it back. That is racy
    (a file another thread creates in between gets the wrong mode), so it is done once, here at import,
    before this process writes anything through us; a later os.umask() call is then not seen."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _proc_umask()
if _UMASK_AT_IMPORT is None:
    _UMASK_AT_IMPORT = _umask_once()


def new_file_mode(path: Path) -> int:
    """The mode a plain open(path, 'w') would leave: an existing file keeps its own, a new one gets
    0666 & ~umask (tempfile.mkstemp makes 0600, which would hide saved frames and shared runs from others)."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode) & 0o777  # (no set-id bits carried over)
    except OSError:
        pass
    umask = _proc_umask()  # read each time: a current umask wins over the one at import
    return 0o666 & ~(_UMASK_AT_IMPORT if umask is None else umask)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds. The file
    ends with the mode a plain open() would give it (see new_file_mode)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, new_file_mode(path))  # (after the block: a writer may have made the file anew)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
