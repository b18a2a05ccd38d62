"""schema register / show / list."""

from __future__ import annotations

from typing import Any

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import emit_json, note
from artifactstore.errors import InvalidSchema
from artifactstore.model.jsonio import strict_json_loads

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)


@click.group(name="schema")
def schema_group() -> None:
    """Metadata schemas (JSON Schema draft 2020-12), immutable once registered."""


@schema_group.command()
@click.argument("schema_id")
@click.argument("file", type=click.File("rb"))
@pass_ctx
def register(ctx: CliContext, schema_id: str, file: Any) -> None:
    """Register FILE as the schema of variant SCHEMA_ID."""
    document = strict_json_loads(file.read(), error=InvalidSchema)
    created = ctx.store().register_schema(schema_id, document)
    note(
        f"schema {schema_id} "
        + ("registered" if created else "unchanged (identical schema already registered)")
    )


@schema_group.command(name="show")
@click.argument("schema_id")
@pass_ctx
def show_schema(ctx: CliContext, schema_id: str) -> None:
    """Print the schema registered as SCHEMA_ID."""
    emit_json(ctx.store(create=False).get_schema(schema_id))


@schema_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_ctx
def list_schemas(ctx: CliContext, as_json: bool) -> None:
    """List registered schema ids."""
    items = ctx.store().list_schemas()
    if as_json:
        emit_json(items)
        return
    for item in items:
        click.echo(f"{item['id']}  {item['digest'][:19]}  {item['registered_at']}")


COMMANDS = [schema_group]
