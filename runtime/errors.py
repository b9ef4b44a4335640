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


class GenWarning(UserWarning):
    """Something was converted or skipped on the user's behalf; the CLI prints it as one line."""
