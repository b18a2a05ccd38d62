"""copy: move the local store to new engines (docs/cli.md, "Moving a store")."""

from __future__ import annotations

from contextlib import ExitStack
from urllib.parse import urlparse

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import emit_json, human_size, note, progress_bar
from artifactstore.config import check_database_url
from artifactstore.errors import InvalidInput, InvalidSetting
from artifactstore.model.records import Progress, no_progress

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)


def _database_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        check_database_url(value)
    except InvalidSetting as exc:
        raise click.BadParameter(str(exc)) from None
    return value


class _Bar:
    """The bytes bar, drawn once the copy knows its total (on a terminal only)."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._advance: Progress = no_progress  # no bar yet

    def start(self, total: int) -> None:
        self._advance = self._stack.enter_context(progress_bar("copy", total))

    def __call__(self, n: int) -> None:
        self._advance(n)


@click.command()
@click.option(
    "--to-database-url",
    required=True,
    callback=_database_url,
    metavar="URL",
    help="The target's metadata database (postgresql://... or sqlite:///...).",
)
@click.option(
    "--to-storage-url",
    required=True,
    metavar="URL",
    help="The target's blob storage (s3://... or file://...).",
)
@click.option(
    "--to-cold-storage-url",
    default=None,
    metavar="URL",
    help="The target's cold tier (needed when the source holds cold blobs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_ctx
def copy(
    ctx: CliContext,
    to_database_url: str,
    to_storage_url: str,
    to_cold_storage_url: str | None,
    as_json: bool,
) -> None:
    """Copy this store's event log, views and blobs to a new database and storage.

    Resumable: run the same command again after an interruption, or to copy
    what the source recorded since the last run.
    """
    for option, url in (
        ("--to-storage-url", to_storage_url),
        ("--to-cold-storage-url", to_cold_storage_url),
    ):
        if url is not None and not urlparse(url).scheme:
            raise click.BadParameter(
                f"{url!r} is not a URL (file:///PATH or s3://BUCKET/PREFIX)", param_hint=option
            )
    store = ctx.local_store("copy")
    with ExitStack() as stack:
        bar = _Bar(stack)
        try:
            report = store.copy_to(
                to_database_url,
                to_storage_url,
                to_cold_storage_url,
                progress=bar,
                on_total=bar.start,
            )
        except InvalidInput as exc:
            if exc.code == InvalidInput.code:  # a bad argument, not a failed operation
                raise click.UsageError(exc.detail) from None
            raise
    if as_json:
        emit_json(report.to_json())
    else:
        note(
            f"copied {report.events} events (the copy holds {report.events_total}) and "
            f"{report.blobs} blobs ({human_size(report.bytes)}); "
            f"{report.blobs_present} blobs were there already"
        )
    if report.behind:
        note(
            f"the source recorded {report.behind} events during the copy: run the same "
            "command again to copy them (stop writes to the source for a final run)"
        )


COMMANDS = [copy]
