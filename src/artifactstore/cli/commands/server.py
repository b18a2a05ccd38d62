"""serve."""

from __future__ import annotations

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import note
from artifactstore.config import Settings

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="TCP port to listen on.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes serving the port.",
)
@click.option(
    "--asgi",
    "server_impl",
    type=click.Choice(["uvicorn", "granian"]),
    default="uvicorn",
    show_default=True,
    help="ASGI server (see BENCHMARKS.md for the figures behind the default).",
)
@click.option("--no-auth", is_flag=True, help="Every caller is admin; loopback addresses only.")
@pass_ctx
def serve(
    ctx: CliContext, host: str, port: int, workers: int, server_impl: str, no_auth: bool
) -> None:
    """Serve the HTTP API over this store."""
    from artifactstore.server.main import check_bind, run

    settings = Settings.load(home=ctx.home, no_auth=no_auth or None)
    check_bind(host, settings.no_auth)
    note(
        f"artifact-store serving {settings.home} on http://{host}:{port} ({server_impl}, "
        f"{workers} worker{'s' if workers > 1 else ''}{', no auth' if settings.no_auth else ''})"
    )
    run(settings, host=host, port=port, workers=workers, server=server_impl)  # type: ignore[arg-type]


COMMANDS = [serve]
