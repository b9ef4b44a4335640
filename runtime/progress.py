"""One progress bar for long work: count, rate and ETA."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(unit: str = "it", transient: bool = False) -> Progress:
    """A rich progress bar showing done/total, `unit`/s and time left; quiet when not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=transient,
    )


def rate_text(done: float, seconds: float, unit: str) -> str:
    return f"{done / seconds:.1f} {unit}/s" if seconds > 0 else f"- {unit}/s"
