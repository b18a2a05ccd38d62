"""The ``artifactstore`` command: parses arguments, calls the library, maps errors once."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.exit_codes import FAILED, exit_code
from artifactstore.cli.output import note
from artifactstore.errors import ArtifactStoreError

__all__ = ["cli", "main"]


#: The module under ``cli/commands`` that defines each top-level command. A
#: command's module is imported only when it runs: the control plane's imports
#: (SQLAlchemy) take a third of a second that remote-mode commands never need,
#: and a local push hashes its files while they load (see ``packages.push``).
COMMAND_MODULES = {
    "cat": "packages",
    "events": "admin",
    "gc": "admin",
    "hold": "retention",
    "ls": "packages",
    "migrate": "admin",
    "namespace": "namespace",
    "pull": "packages",
    "push": "packages",
    "rebuild": "admin",
    "retention": "retention",
    "rm": "packages",
    "schema": "schema",
    "serve": "server",
    "show": "packages",
    "tier": "tier",
    "token": "tokens",
    "verify": "admin",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        commands: list[click.Command] = importlib.import_module(
            f"artifactstore.cli.commands.{module}"
        ).COMMANDS
        return next(c for c in commands if c.name == cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    envvar="ARTIFACTSTORE_HOME",
    help="Data directory of the local store (default ./artifactstore-data); given "
    "here, it means local mode even when ARTIFACTSTORE_URL is set.",
)
@click.option(
    "--server",
    envvar="ARTIFACTSTORE_URL",
    default=None,
    metavar="URL",
    help="Talk to this server instead of a local data directory (remote mode).",
)
@click.option(
    "--token",
    envvar="ARTIFACTSTORE_TOKEN",
    default=None,
    hidden=True,
    help="API token for remote mode (prefer the ARTIFACTSTORE_TOKEN variable).",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Parallel upload streams in remote mode.",
)
@click.version_option(package_name="artifact-store")
@click.pass_context
def cli(
    ctx: click.Context, home: Path | None, server: str | None, token: str | None, parallel: int
) -> None:
    """artifact-store: a content-addressed registry for generated artifacts."""
    ctx.obj = CliContext.from_options(ctx, home, server, token, parallel)
    ctx.call_on_close(ctx.obj.close)


def _run() -> int:
    try:
        # Without standalone mode, click *returns* the code of an Exit raised by a
        # command (verify's exit 3) instead of raising it: pass it on.
        code = cli.main(standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        note("aborted")
        return FAILED
    except ArtifactStoreError as exc:
        note(f"error: {exc.detail} ({exc.code})")
        return exit_code(exc)
    except BrokenPipeError:
        sys.stderr.close()
        return FAILED


def main() -> None:
    """The console script: run the command, then leave without finalising the
    interpreter.

    Tearing down the modules SQLAlchemy imports and the objects a push made
    took 0.15-0.25 s per command on our 2-core VMs (BENCHMARKS.md), a fifth
    of a small push. Nothing needs it: the command has closed its store (the
    database and every staged file) before it returns, so what is left is
    to flush the output and the logs.
    """
    code = _run()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(code)
