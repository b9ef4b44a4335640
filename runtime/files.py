"""Atomic writes: a crash or Ctrl-C never leaves a half-written file under the final name, and a full disk or
a folder that cannot be written is one line naming the output (an OutputError), never a traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import GenError, OutputError

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_file(path: str | Path) -> str | None:
    """What `path` is ('a FIFO (named pipe)', 'a character device', ...) when it exists and is neither a regular
    file nor a folder, links followed; None otherwise. Reading a FIFO waits for a writer, forever; writing over
    a device node replaces it (or, opened, writes to the device)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, a dangling link, a NUL in the name: each caller says its own
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _SPECIAL if test(mode)), "a special file")


def check_input_file(path: str | Path) -> None:
    """Refuse an input that is a FIFO, a device or a socket before anything opens it (and waits on it)."""
    if (kind := special_file(path)) is not None:
        raise GenError(f"'{path}' is {kind}, not a regular file; give a file")


def _refuse_special_output(path: str | Path) -> None:
    """Whatever --overwrite says: only regular files are replaced."""
    if (kind := special_file(path)) is not None:
        raise GenError(f"output '{path}' is {kind}, not a regular file; gen replaces only files: choose another path")


def check_output_path(path: str | Path, overwrite: bool = False) -> Path:
    """Validate an output path before any work is done, so a typo costs nothing. An existing file is refused
    unless `overwrite` (the caller's --overwrite: forgetting to pass it is the safe way round)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise GenError(f"output folder '{parent}' does not exist; create it first or choose another path")
    if path.is_dir():
        raise GenError(f"output '{path}' is a folder; give a file name")
    _refuse_special_output(path)
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


_NO_ROOM = "free some space (or write to another disk) and run again"
_WRITE_PROBLEMS = {  # errno -> why, and what to do; each is about the place, which the user can change
    errno.ENOSPC: ("no space left on the disk", _NO_ROOM),
    errno.EFBIG: ("too large for the file system or the file-size limit (ulimit -f)", "write it to another disk"),
    errno.EROFS: ("the file system is read-only", "choose an output on a writable disk"),
    errno.EACCES: ("permission denied", "choose an output in a folder you may write to"),
    errno.EPERM: ("operation not permitted", "choose an output in a folder you may write to"),
}
if hasattr(errno, "EDQUOT"):  # (not on Windows)
    _WRITE_PROBLEMS[errno.EDQUOT] = ("the disk quota is used up", _NO_ROOM)
NO_ROOM_CODES = (errno.ENOSPC, *([errno.EDQUOT] if hasattr(errno, "EDQUOT") else []))
# No room, or past a size limit: the answer whichever file a write failed on (a refusal is only for the file named).
FULL_CODES = (*NO_ROOM_CODES, errno.EFBIG)


def write_error_code(error: BaseException) -> int | None:
    """The errno behind a failed write, also where a library gives it only in words: safetensors (Rust's
    "... (os error 28)"), or an error that quotes the system's message ("No space left on device")."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno
    text = str(error)
    if found := re.search(r"\(os error (\d+)\)", text):
        return int(found.group(1))
    return next((code for code in FULL_CODES if os.strerror(code) in text), None)


def output_error(path: str | Path | None, error: BaseException) -> OutputError | None:
    """One line for an error met while writing the output `path` (None: not known) that the user can fix (a
    full disk, a quota, a read-only or forbidden folder); None for any other error, which stays what it was."""
    if isinstance(error, OutputError):
        return None  # (said already)
    code = write_error_code(error)
    if code not in _WRITE_PROBLEMS:
        return None
    # A refusal names its file: another one's (an input read while writing) is not this output's problem.
    # Ours are the output and hidden files beside it (our temporary file, a library's own).
    named = getattr(error, "filename", None)
    if path is not None and named is not None and code not in FULL_CODES:
        path, named = Path(path), Path(os.fsdecode(named))
        if named != path and not (named.parent == path.parent and named.name.startswith(".")):
            return None
    why, advice = _WRITE_PROBLEMS[code]
    cause = error if isinstance(error, OSError) and error.errno is not None else OSError(code, os.strerror(code))
    what = f"'{path}'" if path is not None else "the output"
    return OutputError(f"cannot write {what}: {why}", advice, cause)


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Around code that writes the output `path`: a full disk or a folder that cannot be written becomes an
    OutputError (one line, and still an OSError); anything else passes unchanged."""
    try:
        yield
    except Exception as e:  # (not only OSError: safetensors raises its own type)
        if (problem := output_error(path, e)) is None:
            raise
        raise problem from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds. The file
    ends with the mode a plain open() would give it (see new_file_mode). Errors as for writing(); the
    temporary file is removed whatever happens."""
    path = Path(path)
    _refuse_special_output(path)  # (also where no check_output_path came first: a run's pictures, a kiosk's)
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with writing(path):
            yield tmp_path
            os.chmod(tmp_path, new_file_mode(path))  # (after the block: a writer may have made the file anew)
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def append_text(path: str | Path, text: str) -> None:
    """Append `text` whole or not at all: a write that fails part way (a full disk) is cut back, so a
    record-per-line file never holds half a record. Errors as for writing()."""
    path, data = Path(path), memoryview(text.encode("utf-8"))
    _refuse_special_output(path)  # (opening a FIFO to write waits for a reader)
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # (less the umask, as open() does)
        try:
            end = os.fstat(fd).st_size
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
