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
from artifactstore.cli.exit_codes import FAILED, INTERRUPTED, exit_code
from artifactstore.cli.output import note, one_line
from artifactstore.errors import ArtifactStoreError

__all__ = ["cli", "main"]


#: The module under ``cli/commands`` that defines each top-level command. A
#: command's module is imported only when it runs: the control plane's imports
#: (SQLAlchemy) take a third of a second that remote-mode commands never need,
#: and a local push hashes its files while they load (see ``packages.push``).
COMMAND_MODULES = {
    "cat": "packages",
    "copy": "copy",
    "events": "admin",
    "gc": "admin",
    "hold": "retention",
    "key": "signing",
    "log": "log",
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
    "sign": "signing",
    "tier": "tier",
    "token": "tokens",
    "verify": "admin",
}


#: What an interrupted command tells the user, by command (default: "interrupted").
INTERRUPTED_MESSAGES = {
    "push": "interrupted; run the same command to resume",
    "copy": "interrupted; run the same command to resume",
    "pull": "interrupted; no file was written (run the same command to pull again)",
}


class _Interrupted(Exception):
    """Ctrl-C during a command, carrying what to tell the user."""

    def __init__(self, command: str | None) -> None:
        super().__init__(INTERRUPTED_MESSAGES.get(command or "", "interrupted"))


class _LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        """Run the command; Ctrl-C leaves at once (no waiting for its transfers), and
        click's own handling (``Aborted!``, exit 1) is replaced by a message and 130."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted(ctx.invoked_subcommand) from None

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
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    envvar="ARTIFACTSTORE_TIMEOUT",
    metavar="SECONDS",
    help="Remote mode: give up on a server that sends nothing for this long.",
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
    ctx: click.Context,
    home: Path | None,
    server: str | None,
    token: str | None,
    timeout: float,
    parallel: int,
) -> None:
    """artifact-store: a content-addressed registry for generated artifacts."""
    ctx.obj = CliContext.from_options(ctx, home, server, token, parallel, timeout=timeout)
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
    except _Interrupted as exc:
        note(str(exc))
        return INTERRUPTED
    except KeyboardInterrupt:  # before or after the command (parsing, closing the store)
        note("interrupted")
        return INTERRUPTED
    except ArtifactStoreError as exc:
        # One line whatever the detail holds (a server's text may carry newlines).
        note(f"error: {one_line(exc.detail)} ({one_line(exc.code, 64)})")
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
