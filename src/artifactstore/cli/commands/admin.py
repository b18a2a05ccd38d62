"""verify, gc, events, rebuild, migrate."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.exit_codes import INTEGRITY
from artifactstore.cli.output import emit_json, human_size, note
from artifactstore.config import parse_duration
from artifactstore.errors import InvalidInput
from artifactstore.model.identity import Reference

if TYPE_CHECKING:
    from artifactstore.model.events import Event

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)


@click.command()
@click.argument("ref", required=False)
@click.option("--all", "all_", is_flag=True, help="Verify every stored blob.")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Public key file (PEM): REF must also carry a valid signature by it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def verify(
    ctx: CliContext, ref: str | None, all_: bool, key_file: Path | None, as_json: bool
) -> None:
    """Re-read and re-hash stored bytes; exit 3 on any damage.

    With --key, also check REF's manifest digest and that a signature by that
    key is over it (exit 3 if not), and report which of the namespace's
    trusted keys signed it.
    """
    if (ref is None) == (not all_):
        raise click.UsageError("give either REF or --all")
    if key_file is not None and ref is None:
        raise click.UsageError("--key checks the signatures of one REF")
    reference = None if ref is None else Reference.parse(ref)
    store = ctx.store(create=False)
    report = store.verify(reference)
    signed: dict[str, Any] | None = None
    if key_file is not None and reference is not None and report.ok:
        from artifactstore.cli.commands.signing import check_signatures

        signed = check_signatures(store, reference, key_file)
    if as_json:
        emit_json(report.to_json() if signed is None else {**report.to_json(), "signature": signed})
    else:
        for item in report.damaged:
            note(f"DAMAGED {item['digest']}: {item['problem']}")
        note(
            f"{report.blobs_checked} blobs, {human_size(report.bytes_checked)} checked: "
            + ("ok" if report.ok else f"{len(report.damaged)} damaged")
        )
        if signed is not None:
            trusted = ", ".join(k[:16] + "..." for k in signed["trusted_signers"]) or "none"
            note(f"signature by key {signed['key_id']} verified; trusted signers: {trusted}")
    if not report.ok:
        raise click.exceptions.Exit(INTEGRITY)


@click.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be collected.")
@click.option("--grace", default=None, help="Override the grace period (e.g. 0s, 1h, 7d).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def gc(ctx: CliContext, dry_run: bool, grace: str | None, as_json: bool) -> None:
    """Remove blobs no live package references, once their grace period has passed."""
    report = ctx.store(create=False).gc(
        dry_run=dry_run, grace=parse_duration(grace) if grace else None
    )
    if as_json:
        emit_json(report.to_json())
        return
    verb = "would collect" if dry_run else "collected"
    note(
        f"{verb} {len(report.collected)} blobs ({human_size(report.bytes_freed)}); "
        f"{report.protected_by_grace} unreferenced blobs still within the grace period; "
        f"{report.orphans_removed} orphaned objects removed"
    )


@click.command()
@click.option("--after", type=click.IntRange(min=0), default=0, help="Only events after this seq.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many events.")
@click.option("--follow", is_flag=True, help="Keep printing new events as they are appended.")
@click.option(
    "--verify-chain", is_flag=True, help="Check the hash chain; exit 3 at the first bad event."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def events(
    ctx: CliContext, after: int, limit: int | None, follow: bool, verify_chain: bool, as_json: bool
) -> None:
    """Print the event log (or verify its hash chain)."""
    store = ctx.store(create=False)
    if verify_chain:
        count = store.verify_chain()
        note(f"event chain verified: {count} events, no edit, removal or reordering")
        return
    if follow and ctx.remote:
        # The server pushes each event as it commits (GET /v1/events/stream).
        from artifactstore.client.remote import RemoteStore

        assert isinstance(store, RemoteStore)
        for e in itertools.islice(store.follow_events(after), limit):
            _print_event(e, as_json)
        return
    printed = 0
    while True:
        batch = store.events(after, None if limit is None else limit - printed)
        for e in batch:
            _print_event(e, as_json)
            after = e.seq
            printed += 1
        if not follow or (limit is not None and printed >= limit):
            return
        time.sleep(1.0)


def _print_event(e: Event, as_json: bool) -> None:
    """One line per event (click.echo flushes it: a follower reads each as it arrives)."""
    if as_json:
        click.echo(json.dumps(e.to_json(), ensure_ascii=False, sort_keys=True))
    else:
        click.echo(f"{e.seq:>8}  {e.time}  {e.type:<18} {e.subject}  by {e.actor}")


@click.command()
@pass_ctx
def rebuild(ctx: CliContext) -> None:
    """Empty the views and replay the event log into them."""
    count = ctx.local_store("rebuild").rebuild()
    note(f"replayed {count} events into the views")


@click.command()
@pass_ctx
def migrate(ctx: CliContext) -> None:
    """Apply pending database migrations."""
    from artifactstore.config import Settings
    from artifactstore.store import Store

    if ctx.remote:
        raise InvalidInput("migrate works on the database: run it on the server host")
    settings = Settings.load(home=ctx.home)
    before, after = Store.migrate(settings)
    note(f"database {settings.redacted_database_url()}: {before or 'empty'} -> {after}")


COMMANDS = [verify, gc, events, rebuild, migrate]
