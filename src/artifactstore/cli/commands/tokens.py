"""token create / list / revoke."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import emit_json, note
from artifactstore.config import parse_duration

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)


@click.group(name="token")
def token_group() -> None:
    """API tokens: secrets are shown once and stored only as a hash."""


@token_group.command()
@click.option("--name", required=True, help="What the token is for (shown in the event log).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SCOPE",
    help="NS:read, NS:write, NS:delete, NS:admin, admin or metrics (repeatable).",
)
@click.option("--admin", "admin", is_flag=True, help="Shorthand for --scope admin (global).")
@click.option("--expires", default=None, metavar="DURATION", help="Lifetime, e.g. 90d or 12h.")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its secret as JSON.")
@pass_ctx
def create(
    ctx: CliContext,
    name: str,
    scopes: tuple[str, ...],
    admin: bool,
    expires: str | None,
    as_json: bool,
) -> None:
    """Create a token; its secret is printed once, on stdout."""
    wanted = list(scopes) + (["admin"] if admin else [])
    if not wanted:  # a missing argument: a usage error (exit 2), as click reports its own
        raise click.UsageError("give at least one --scope (e.g. --scope ci:write) or --admin")
    lifetime = parse_duration(expires) if expires else None
    info, secret = ctx.store().create_token(name, wanted, expires_in=lifetime)
    if as_json:
        emit_json({**info.to_json(), "secret": secret})
        return
    note(
        f"token {info.id} ({info.name}) with scopes {', '.join(info.scopes)}"
        + (f", expires {info.expires_at}" if info.expires_at else "")
        + ": store the secret now, it is not shown again"
    )
    click.echo(secret)


@token_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_ctx
def list_tokens(ctx: CliContext, as_json: bool) -> None:
    """List tokens: ids, names, scopes, last use; never secrets."""
    items = ctx.store().list_tokens()
    if as_json:
        emit_json([i.to_json() for i in items])
        return
    for i in items:
        used = (
            datetime.fromtimestamp(i.last_used_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if i.last_used_at
            else "never used"
        )
        state = "revoked" if i.revoked_at else (f"expires {i.expires_at}" if i.expires_at else "")
        click.echo(f"{i.id}  {i.name:<20} {','.join(i.scopes):<30} {used:<21} {state}")


@token_group.command()
@click.argument("token_id")
@pass_ctx
def revoke(ctx: CliContext, token_id: str) -> None:
    """Revoke a token: refused from the very next request on."""
    info = ctx.store().revoke_token(token_id.removeprefix("tok_"))
    note(f"token {info.id} ({info.name}) revoked at {info.revoked_at}")


COMMANDS = [token_group]
