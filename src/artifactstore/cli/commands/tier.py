"""tier move / restore / status: a version's blobs between the hot and the cold tier."""

from __future__ import annotations

import time

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import emit_json, human_size, note
from artifactstore.model.identity import Reference
from artifactstore.model.records import TIERS, BlobTier, TierReport

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)


def _summary(blobs: list[BlobTier]) -> str:
    counts: dict[str, int] = {}
    for b in blobs:
        state = b.tier if b.available else f"{b.tier} ({b.restore_status})"
        counts[state] = counts.get(state, 0) + 1
    size = human_size(sum(b.size for b in blobs))
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"{len(blobs)} blob(s), {size}: {parts or 'no files'}"


def _show(report: TierReport, as_json: bool, done: str) -> None:
    if as_json:
        emit_json(report.to_json())
        return
    note(f"{done} {len(report.changed)} blob(s), {human_size(report.bytes_changed)}")
    click.echo(_summary(report.blobs))


@click.group(name="tier")
def tier_group() -> None:
    """Storage tiers: move versions to cold storage and restore them."""


@tier_group.command(name="move")
@click.argument("ref")
@click.option("--to", "to", type=click.Choice(TIERS), required=True, help="The target tier.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def move(ctx: CliContext, ref: str, to: str, as_json: bool) -> None:
    """Move the blobs of version REF to another tier (cold ones need a restore to be read)."""
    report = ctx.store(create=False).tier_move(Reference.parse(ref), to)
    _show(report, as_json, f"moved to {to}:")


@tier_group.command(name="restore")
@click.argument("ref")
@click.option("--wait", is_flag=True, help="Wait until every blob is readable.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def restore(ctx: CliContext, ref: str, wait: bool, as_json: bool) -> None:
    """Restore the cold blobs of version REF (readable after the store's restore delay)."""
    store = ctx.store(create=False)
    reference = Reference.parse(ref)
    report = store.tier_restore(reference)
    while wait and not all(b.available for b in report.blobs):
        time.sleep(0.5)
        report.blobs = store.tier_status(reference)  # completes the restores that are due
    done = all(b.available for b in report.blobs)
    _show(report, as_json, "restored" if done else "restore started for")
    if not done:
        ready = max(str(b.restore_ready_at) for b in report.blobs if not b.available)
        note(f"readable from {ready}; 'artifactstore tier status {ref}' shows progress")


@tier_group.command(name="status")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of blobs.")
@pass_ctx
def status(ctx: CliContext, ref: str, as_json: bool) -> None:
    """Where each blob of version REF is, and whether it can be read now."""
    blobs = ctx.store(create=False).tier_status(Reference.parse(ref))
    if as_json:
        emit_json([b.to_json() for b in blobs])
        return
    click.echo(_summary(blobs))
    for b in blobs:
        ready = f" (ready {b.restore_ready_at})" if b.restore_ready_at else ""
        click.echo(f"{b.digest}  {human_size(b.size):>10}  {b.tier:<5} {b.restore_status}{ready}")


COMMANDS = [tier_group]
