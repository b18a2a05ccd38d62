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

__all__ = ["emit_json", "human_size", "note", "one_line", "progress_bar", "progress_bars"]

#: Transfers smaller than this finish before a bar is worth drawing.
_BAR_THRESHOLD = 8 * 1024 * 1024


def note(message: str) -> None:
    """A human-readable line on stderr (stdout stays for data and JSON)."""
    click.echo(message, err=True)


def one_line(text: str, limit: int = 1000) -> str:
    """``text`` as one printable line of at most ``limit`` characters: an error's detail
    may carry a server's words or a file name, and a message is one line on stderr
    (no newline, no terminal escape sequence)."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


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
    with progress_bars(total, label) as (advance,):
        yield advance


@contextmanager
def progress_bars(total: int | None, *labels: str) -> Iterator[tuple[ProgressFn, ...]]:
    """One callback per label, each advancing its own bar of ``total`` bytes (a remote
    push hashes, then sends), drawn together on stderr when it is a terminal; no-ops
    otherwise. Sizes and speeds in binary units (KiB, MiB), as ``human_size`` prints
    them everywhere else."""
    if not sys.stderr.isatty() or (total is not None and total < _BAR_THRESHOLD):
        yield tuple(_quiet for _ in labels)
        return
    from rich.console import Console  # imported only when a bar is drawn
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class BinarySpeedColumn(ProgressColumn):
        """The transfer speed in MiB/s (rich's own column counts in MB/s)."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            shown = "?" if speed is None else f"{human_size(int(speed))}/s"
            return Text(shown, style="progress.data.speed")

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        BinarySpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:

        def advancer(label: str) -> ProgressFn:
            task = bar.add_task(label, total=total)
            return lambda n: bar.advance(task, n)

        yield tuple(advancer(label) for label in labels)


def _quiet(_n: int) -> None:
    """The progress callback in a pipe: nothing to draw."""
