"""What every command shares: a local Store or a RemoteStore, opened lazily.

Remote mode is chosen by ``--server`` or ``ARTIFACTSTORE_URL`` (token from
``ARTIFACTSTORE_TOKEN``); the same commands then talk HTTP. Commands that
only make sense on the host that owns the data (rebuild, migrate, verify
--all) say so instead of pretending.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from artifactstore.errors import InvalidInput

if TYPE_CHECKING:
    from artifactstore.model.api import StoreAPI
    from artifactstore.store import Store

__all__ = ["CliContext"]


class CliContext:
    def __init__(
        self, home: Path | None, server: str | None, token: str | None, parallel: int
    ) -> None:
        self.home = home
        self.server = server
        self.token = token
        self.parallel = parallel
        self._store: StoreAPI | None = None

    @property
    def remote(self) -> bool:
        return bool(self.server)

    def store(self, *, create: bool = True) -> StoreAPI:
        """The store the command works on: remote when a server URL is set."""
        if self._store is None:
            if self.server:
                from artifactstore.client.remote import RemoteStore

                self._store = RemoteStore(self.server, token=self.token, parallel=self.parallel)
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
