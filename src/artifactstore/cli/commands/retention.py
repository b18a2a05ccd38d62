"""retention set / show / apply / lock and hold set / release / list (docs/retention.md)."""

from __future__ import annotations

from typing import Any

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import emit_json, note
from artifactstore.model.identity import Namespace, PackageName, Reference
from artifactstore.model.records import Hold
from artifactstore.model.retention import (
    MAX_DAYS,
    RetentionPolicy,
    RetentionSettings,
    days_text,
)

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)

_DAYS = click.FloatRange(min=0, max=MAX_DAYS, min_open=True)


def _target(text: str) -> tuple[str, str | None]:
    """``NS`` or ``NS/NAME``, validated (a malformed one is a usage error, exit 2)."""
    ns, sep, name = text.partition("/")
    Namespace(ns)
    if sep:
        PackageName(name)
        return ns, name
    return ns, None


def _where(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--keep-where")
        out[key] = value
    return out


def _show_settings(s: RetentionSettings, name: str | None) -> None:
    click.echo(f"namespace {s.namespace}")
    click.echo(f"  default  {s.default.describe() if s.default else '(none)'}")
    for package, own in sorted(s.packages.items()):
        if name is None or package == name:
            click.echo(f"  package  {package}: {own.describe()}")
    if s.lock_days is not None:
        click.echo(
            f"  lock     {days_text(s.lock_days)} (compliance mode, set {s.locked_at}): "
            "no version younger than this can be deleted"
        )
    else:
        click.echo("  lock     (none)")
    if name is not None:
        policy, scope = s.effective(name)
        if policy is None:
            click.echo(f"{s.namespace}/{name}: no policy applies; retention keeps every version")
        else:
            click.echo(f"{s.namespace}/{name}: {policy.describe()} (the {scope} policy)")


@click.group(name="retention")
def retention_group() -> None:
    """Retention policies, the retention lock, and applying them."""


@retention_group.command(name="set")
@click.argument("target", metavar="NS[/NAME]")
@click.option("--keep-last", type=click.IntRange(min=1), help="Keep the N newest versions.")
@click.option("--keep-days", type=_DAYS, help="Keep versions committed less than D days ago.")
@click.option(
    "--keep-where",
    multiple=True,
    metavar="K=V",
    help="Keep versions whose metadata K equals V (repeatable: all must match).",
)
@click.option("--clear", is_flag=True, help="Remove the policy (the lock, if any, stays).")
@click.option("--json", "as_json", is_flag=True, help="Print the namespace's settings as JSON.")
@pass_ctx
def set_policy(
    ctx: CliContext,
    target: str,
    keep_last: int | None,
    keep_days: float | None,
    keep_where: tuple[str, ...],
    clear: bool,
    as_json: bool,
) -> None:
    """Set the retention policy of a namespace (its default) or of one package.

    A package's own policy replaces the namespace default. A version is kept
    when any rule keeps it; held versions, versions younger than the
    retention lock, and packages without any policy are always kept.
    """
    namespace, name = _target(target)
    rules = keep_last is not None or keep_days is not None or bool(keep_where)
    if clear == rules:
        raise click.UsageError("give --keep-last, --keep-days or --keep-where, or --clear")
    policy = (
        None
        if clear
        else RetentionPolicy.of(
            keep_last=keep_last, keep_days=keep_days, keep_where=_where(keep_where)
        )
    )
    settings = ctx.store().set_retention(namespace, name, policy)
    if as_json:
        emit_json(settings.to_json())
        return
    what = "cleared" if policy is None else f"set to {policy.describe()}"
    note(f"retention policy of {target} {what}")


@retention_group.command(name="show")
@click.argument("target", metavar="NS[/NAME]")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@pass_ctx
def show_policy(ctx: CliContext, target: str, as_json: bool) -> None:
    """Show a namespace's policies and lock (with NAME: the policy that applies to it)."""
    namespace, name = _target(target)
    settings = ctx.store(create=False).retention_settings(namespace)
    if as_json:
        body: dict[str, Any] = settings.to_json()
        if name is not None:
            policy, scope = settings.effective(name)
            body["effective"] = {
                "package": name,
                "policy": None if policy is None else policy.to_json(),
                "scope": scope,
            }
        emit_json(body)
        return
    _show_settings(settings, name)


@retention_group.command(name="apply")
@click.argument("namespace", required=False)
@click.option("--dry-run", is_flag=True, help="Only print the plan; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (or what was done) as JSON.")
@pass_ctx
def apply(ctx: CliContext, namespace: str | None, dry_run: bool, as_json: bool) -> None:
    """Apply retention policies: each version, keep or delete, and the rule that decided.

    Deleting writes tombstones; the bytes go when 'artifactstore gc' finds them
    unreferenced. Held versions and versions younger than the lock are never deleted.
    """
    if namespace is not None:
        Namespace(namespace)
    report = ctx.store(create=False).apply_retention(namespace, dry_run=dry_run)
    if as_json:
        emit_json(report.to_json())
        return
    width = max((len(d.reference) for d in report.decisions), default=0)
    for d in report.decisions:
        click.echo(f"{d.action:<6}  {d.reference:<{width}}  {d.reason}")
    total, gone = len(report.decisions), len(report.deleted)
    if dry_run:
        note(f"would delete {gone} of {total} versions (dry run: nothing deleted)")
    else:
        note(
            f"deleted {gone} of {total} versions; "
            "run 'artifactstore gc' to reclaim bytes nothing references any more"
        )


@retention_group.command(name="lock")
@click.argument("namespace")
@click.option("--keep-days", type=_DAYS, required=True, help="Minimum age before any deletion.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (it is irreversible).")
@pass_ctx
def lock(ctx: CliContext, namespace: str, keep_days: float, yes: bool) -> None:
    """Set or extend a namespace's retention lock (compliance mode): irreversible.

    No version younger than the lock can be deleted, by anyone, through any
    command or route. The lock can be extended later, never shortened or removed.
    """
    Namespace(namespace)
    if not yes:
        click.confirm(
            f"Lock namespace {namespace} to keep every version for {days_text(keep_days)}? "
            "This can never be shortened or removed",
            abort=True,
            err=True,
        )
    settings = ctx.store().lock_retention(namespace, keep_days)
    assert settings.lock_days is not None
    note(
        f"namespace {namespace}: retention lock {days_text(settings.lock_days)} "
        f"(since {settings.locked_at})"
    )


# --- legal holds ------------------------------------------------------------------------------


def _hold_line(h: Hold) -> str:
    state = (
        "active" if h.active else f"released {h.released_at} by {h.released_by}: {h.release_reason}"
    )
    return f"#{h.id:<6} {h.reference}  {h.placed_at} by {h.actor}: {h.reason}  [{state}]"


@click.group(name="hold")
def hold_group() -> None:
    """Legal holds: a held version cannot be deleted by anyone until released."""


@hold_group.command(name="set")
@click.argument("ref")
@click.option("--reason", required=True, help="Why (recorded with the actor and the time).")
@click.option("--json", "as_json", is_flag=True, help="Print the hold as JSON.")
@pass_ctx
def set_hold(ctx: CliContext, ref: str, reason: str, as_json: bool) -> None:
    """Place a legal hold on version REF (holds stack: each is released on its own)."""
    hold = ctx.store(create=False).place_hold(Reference.parse(ref), reason)
    if as_json:
        emit_json(hold.to_json())
        return
    note(f"hold #{hold.id} placed on {hold.reference}: {hold.reason}")


@hold_group.command(name="release")
@click.argument("ref")
@click.option("--reason", required=True, help="Why the hold ends (recorded).")
@click.option("--id", "hold_id", type=click.IntRange(min=1), help="Which hold, when several stack.")
@click.option("--json", "as_json", is_flag=True, help="Print the released hold as JSON.")
@pass_ctx
def release_hold(
    ctx: CliContext, ref: str, reason: str, hold_id: int | None, as_json: bool
) -> None:
    """Release the single active hold on REF, or the one --id names."""
    hold = ctx.store(create=False).release_hold(Reference.parse(ref), reason, hold_id=hold_id)
    if as_json:
        emit_json(hold.to_json())
        return
    note(f"hold #{hold.id} on {hold.reference} released: {reason}")


@hold_group.command(name="list")
@click.argument("ref", required=False)
@click.option("--all", "include_released", is_flag=True, help="Include released holds.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_ctx
def list_holds(ctx: CliContext, ref: str | None, include_released: bool, as_json: bool) -> None:
    """List active legal holds (of REF, or everywhere)."""
    reference = None if ref is None else Reference.parse(ref)
    items = ctx.store(create=False).list_holds(reference, include_released=include_released)
    if as_json:
        emit_json([h.to_json() for h in items])
        return
    if not items:
        note("no legal holds")
    for h in items:
        click.echo(_hold_line(h))


COMMANDS = [retention_group, hold_group]
