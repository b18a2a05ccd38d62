"""namespace show / set / trust: a namespace's quota, movable tags, anonymous read and
signature policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import emit_json, human_size, note
from artifactstore.config import parse_size
from artifactstore.errors import InvalidInput, InvalidName
from artifactstore.model.identity import Namespace, Version

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)


def _quota(text: str) -> int | None:
    """``--quota``: a size, or ``none`` to remove the quota; malformed is a usage error."""
    if text.strip().lower() == "none":
        return None
    try:
        return parse_size(text)
    except InvalidInput as exc:
        raise click.BadParameter(exc.detail, param_hint="'--quota'") from None


def _tags(values: tuple[str, ...]) -> list[str]:
    for tag in values:
        try:
            Version(tag)
        except InvalidName as exc:
            raise click.BadParameter(exc.detail, param_hint="'--movable-tag'") from None
    return sorted(set(values))


def _bytes(n: int) -> str:
    return f"{human_size(n)} ({n} bytes)"


def _usage_line(used: int, quota: int | None) -> str:
    if quota is None:
        return _bytes(used)
    if quota == 0:
        share = "over the quota of 0 bytes" if used else "the quota is 0 bytes"
    else:
        share = f"{used * 100 / quota:.1f}% of the quota"
        if used > quota:
            share += " (over it: new bytes are refused)"
    return f"{_bytes(used)}, {share}"


def _show(namespace: str, settings: dict[str, Any]) -> None:
    quota = settings.get("quota_bytes")
    used = int(settings.get("used_bytes", 0))
    tags = settings.get("movable_tags") or []
    click.echo(f"namespace {namespace}")
    click.echo(f"  quota           {'(none)' if quota is None else _bytes(int(quota))}")
    click.echo(f"  used            {_usage_line(used, quota)}")
    click.echo(f"  movable tags    {', '.join(tags) if tags else '(none)'}")
    click.echo(f"  anonymous read  {'on' if settings.get('anonymous_read') else 'off'}")
    click.echo(f"  require signed  {'yes' if settings.get('require_signature') else 'no'}")
    _show_trust(settings)


def _show_trust(settings: dict[str, Any]) -> None:
    keys = settings.get("trusted_keys") or []
    if not keys:
        click.echo("  trusted keys    (none)")
    for entry in keys:
        until = f"until {entry['expires']}" if entry.get("expires") else "no expiry"
        click.echo(f"  trusted key     {entry['key_id']} ({until})")


@click.group(name="namespace")
def namespace_group() -> None:
    """Namespace settings: byte quota, movable tags, anonymous read, trusted signing keys."""


@namespace_group.command(name="show")
@click.argument("namespace")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@pass_ctx
def show(ctx: CliContext, namespace: str, as_json: bool) -> None:
    """Show a namespace's settings and the bytes its quota counts (used_bytes)."""
    Namespace(namespace)
    settings = ctx.store(create=False).namespace_settings(namespace)
    if as_json:
        emit_json(settings)
        return
    _show(namespace, settings)


@namespace_group.command(name="set")
@click.argument("namespace")
@click.option(
    "--quota",
    metavar="SIZE|none",
    help="Byte quota: 1048576, 500MB, 10GiB, 1.5TiB ... or none (no quota).",
)
@click.option(
    "--movable-tag",
    "movable_tags",
    multiple=True,
    metavar="TAG",
    help="A version name pushes may move, e.g. latest (repeatable; replaces the list).",
)
@click.option("--no-movable-tags", is_flag=True, help="No movable tags: every version immutable.")
@click.option(
    "--anonymous-read/--no-anonymous-read",
    default=None,
    help="Let anyone, without a token, read the namespace's packages.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new settings as JSON.")
@pass_ctx
def set_settings(
    ctx: CliContext,
    namespace: str,
    quota: str | None,
    movable_tags: tuple[str, ...],
    no_movable_tags: bool,
    anonymous_read: bool | None,
    as_json: bool,
) -> None:
    """Change some of a namespace's settings; the others keep their values.

    The quota limits the bytes of the distinct blobs the namespace holds
    (each counted once, however many versions share it); a push over it is
    refused before its bytes are stored. Lowering it below the current use
    is allowed: then only pushes that add no new bytes succeed.
    """
    Namespace(namespace)
    if movable_tags and no_movable_tags:
        raise click.UsageError("give --movable-tag or --no-movable-tags, not both")
    changes: dict[str, Any] = {}
    if quota is not None:
        changes["quota_bytes"] = _quota(quota)
    if movable_tags:
        changes["movable_tags"] = _tags(movable_tags)
    if no_movable_tags:
        changes["movable_tags"] = []
    if anonymous_read is not None:
        changes["anonymous_read"] = anonymous_read
    if not changes:
        raise click.UsageError(
            "nothing to change: give --quota, --movable-tag, --no-movable-tags "
            "or --anonymous-read/--no-anonymous-read"
        )
    store = ctx.store()
    # Read, modify, write: the settings are replaced whole, so send back every
    # setting this command was not asked to change (used_bytes is read-only).
    current = store.namespace_settings(namespace)
    wanted = {k: v for k, v in current.items() if k != "used_bytes"}
    wanted.update(changes)
    settings = store.set_namespace_settings(namespace, wanted)
    if as_json:
        emit_json(settings)
        return
    quota_now = settings.get("quota_bytes")
    tags = settings.get("movable_tags") or []
    note(
        f"namespace {namespace}: quota "
        + ("none" if quota_now is None else human_size(int(quota_now)))
        + f", movable tags {', '.join(tags) if tags else 'none'}"
        + f", anonymous read {'on' if settings.get('anonymous_read') else 'off'}"
    )


@namespace_group.command(name="trust")
@click.argument("namespace")
@click.argument("public_key", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--expires", metavar="DATE", help="Trust the key until then (RFC 3339 date or time).")
@click.option(
    "--require/--no-require",
    default=None,
    help="Refuse commits without a signature by a trusted, unexpired key (or stop refusing).",
)
@click.option("--remove", "remove", multiple=True, metavar="KEYID", help="Stop trusting a key.")
@click.option("--list", "list_", is_flag=True, help="Only list the trusted keys.")
@click.option("--json", "as_json", is_flag=True, help="Print the new settings as JSON.")
@pass_ctx
def trust(
    ctx: CliContext,
    namespace: str,
    public_key: Path | None,
    expires: str | None,
    require: bool | None,
    remove: tuple[str, ...],
    list_: bool,
    as_json: bool,
) -> None:
    """Trust a signing key (PUBLIC_KEY, a PEM file) in NAMESPACE; remove or list keys.

    Trusting a key that is already trusted replaces its expiry. With
    --require, a commit to the namespace must carry a valid signature by a
    trusted key whose trust has not expired (push --sign).
    """
    Namespace(namespace)
    if expires is not None and public_key is None:
        raise click.UsageError("--expires applies to the PUBLIC_KEY being trusted")
    store = ctx.store()
    current = store.namespace_settings(namespace)
    if list_ or (public_key is None and require is None and not remove):
        if as_json:
            emit_json(current.get("trusted_keys") or [])
        else:
            _show_trust(current)
        return
    wanted = {k: v for k, v in current.items() if k != "used_bytes"}
    entries = [e for e in wanted.get("trusted_keys") or [] if e["key_id"] not in remove]
    unknown = set(remove) - {e["key_id"] for e in wanted.get("trusted_keys") or []}
    if unknown:
        raise InvalidInput(f"namespace {namespace} does not trust key {sorted(unknown)[0]}")
    if public_key is not None:
        from artifactstore.provenance.keys import load_public_key

        key = load_public_key(public_key)
        entries = [e for e in entries if e["key_id"] != key.id]
        entries.append({"public_key": key.pem().decode("ascii"), "expires": expires})
    wanted["trusted_keys"] = entries
    if require is not None:
        wanted["require_signature"] = require
    settings = store.set_namespace_settings(namespace, wanted)
    if as_json:
        emit_json(settings)
        return
    count = len(settings.get("trusted_keys") or [])
    note(
        f"namespace {namespace}: {count} trusted key(s); signatures "
        + ("required" if settings.get("require_signature") else "not required")
    )


COMMANDS = [namespace_group]
