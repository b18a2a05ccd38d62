"""Terminal output: progress bars on a terminal, silence in pipes, JSON on request."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from artifactstore.model.records import Progress as ProgressFn

__all__ = ["emit_json", "human_size", "note", "progress_bar"]

#: Transfers smaller than this finish before a bar is worth drawing.
_BAR_THRESHOLD = 8 * 1024 * 1024


def note(message: str) -> None:
    """A human-readable line on stderr (stdout stays for data and JSON)."""
    click.echo(message, err=True)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@contextmanager
def progress_bar(label: str, total: int | None) -> Iterator[ProgressFn]:
    """A callback advancing a bar on stderr when it is a terminal; a no-op otherwise."""
    if not sys.stderr.isatty() or (total is not None and total < _BAR_THRESHOLD):
        yield lambda _n: None
        return
    from rich.console import Console  # imported only when a bar is drawn
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
