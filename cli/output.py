"""Where the CLI speaks: `err` (stderr: progress, what was written, warnings, errors), `out` (stdout: the
tables and figures a user may pipe)."""

from rich.console import Console

err = Console(stderr=True, soft_wrap=True, highlight=False)  # one line per message, whatever the width
out = Console()
