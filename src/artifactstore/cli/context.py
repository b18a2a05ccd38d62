"""What every command shares: a local Store or a RemoteStore, opened lazily.

Remote mode is chosen by ``--server`` or ``ARTIFACTSTORE_URL`` (token from
``ARTIFACTSTORE_TOKEN``); the same commands then talk HTTP. Commands that
only make sense on the host that owns the data (rebuild, migrate, verify
--all) say so instead of pretending.

A variable left in the shell must not send a command somewhere its user did
not mean: ``--home`` on the command line beats ``ARTIFACTSTORE_URL`` (local
mode), ``--home`` with ``--server`` is a usage error, and a store chosen by
``ARTIFACTSTORE_URL`` alone is named on stderr when stderr is a terminal (pipes
and scripts stay quiet, as with the progress bars).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from artifactstore.cli.output import note
from artifactstore.errors import InvalidInput

if TYPE_CHECKING:
    from artifactstore.model.api import StoreAPI
    from artifactstore.store import Store

__all__ = ["CliContext"]


class CliContext:
    def __init__(
        self,
        home: Path | None,
        server: str | None,
        token: str | None,
        parallel: int,
        *,
        timeout: float = 300.0,
    ) -> None:
        self.home = home
        self.server = server
        self.token = token
        self.parallel = parallel
        self.timeout = timeout
        self._store: StoreAPI | None = None
        self._server_from_env = False

    @classmethod
    def from_options(
        cls,
        ctx: click.Context,
        home: Path | None,
        server: str | None,
        token: str | None,
        parallel: int,
        *,
        timeout: float = 300.0,
    ) -> CliContext:
        """Local or remote mode from the global options and where each came from."""
        home_given = ctx.get_parameter_source("home") == ParameterSource.COMMANDLINE
        server_source = ctx.get_parameter_source("server")
        if home_given and server_source == ParameterSource.COMMANDLINE:
            raise click.UsageError("give --home (local store) or --server (remote), not both")
        if home_given:
            server = None  # an explicit data directory beats ARTIFACTSTORE_URL
        self = cls(home, server, token, parallel, timeout=timeout)
        self._server_from_env = bool(server) and server_source == ParameterSource.ENVIRONMENT
        return self

    @property
    def remote(self) -> bool:
        return bool(self.server)

    def store(self, *, create: bool = True) -> StoreAPI:
        """The store the command works on: remote when a server URL is set."""
        if self._store is None:
            if self.server:
                from artifactstore.client.remote import RemoteStore

                if self._server_from_env and sys.stderr.isatty():
                    note(f"remote store {self.server} (ARTIFACTSTORE_URL; --home DIR for local)")

                self._store = RemoteStore(
                    self.server, token=self.token, parallel=self.parallel, timeout=self.timeout
                )
            else:
                from artifactstore.store import Store

                # The control plane opens on a thread while a push stages its files.
                self._store = Store.open(self.home, create=create, wait=False)
        return self._store

    def local_store(self, what: str) -> Store:
        """The local Store; ``what`` names the command for the remote-mode refusal."""
        if self.server:
            raise InvalidInput(f"{what} works on the data directory: run it on the server host")
        store = self.store(create=False)
        from artifactstore.store import Store

        assert isinstance(store, Store)
        return store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
