"""serve."""

from __future__ import annotations

import os

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import note
from artifactstore.config import Settings

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)


def default_workers() -> int:
    """One worker per core this process may run on (its affinity, as a container's CPU
    set limits it), at most 64: small requests are CPU-bound in Python, and one
    process runs Python on one core at a time."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # macOS, Windows: no affinity to ask
        cores = os.cpu_count() or 1
    return max(1, min(64, cores))


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
    default=default_workers,
    show_default="the CPU cores this process may use",
    help="Worker processes serving the port; each runs Python on one core at a time.",
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
    line = (
        f"artifact-store serving {settings.home} on http://{host}:{port} ({server_impl}, "
        f"{workers} worker{'s' if workers > 1 else ''}{', no auth' if settings.no_auth else ''})"
    )
    run(
        settings,
        host=host,
        port=port,
        workers=workers,
        server=server_impl,  # type: ignore[arg-type]
        announce=lambda: note(line),
    )


COMMANDS = [serve]
