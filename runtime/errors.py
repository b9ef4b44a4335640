"""User-facing errors: one line that says what is wrong and what to do, never a traceback."""

from __future__ import annotations

import importlib


class GenError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with status 2."""


def require_extra(module: str, extra: str = "train") -> None:
    """Fail clearly when a command needs an optional dependency that is not installed."""
    try:
        importlib.import_module(module)  # (the command imports it next anyway)
    except ImportError:
        raise GenError(
            f"this command needs '{module}', which is not installed; "
            f"install the '{extra}' extra: pip install 'gen[{extra}]' (or pip install -e '.[{extra}]')"
        ) from None


class OutputError(GenError, OSError):
    """An output that cannot be written (a full disk, a read-only or forbidden folder): one line for the user,
    and still the OSError it was, so code that handles OSError itself keeps its own advice."""

    def __init__(self, reason: str, advice: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror, cause.filename)
        self.reason, self.advice = reason, advice  # (a caller may give its own advice)

    def __str__(self) -> str:
        return f"{self.reason}; {self.advice}"


class GenWarning(UserWarning):
    """Something was converted or skipped on the user's behalf; the CLI prints it as one line."""
