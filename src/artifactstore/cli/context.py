"""What every command shares: the store, opened lazily from the settings."""

from __future__ import annotations

from pathlib import Path

from artifactstore.store import Store

__all__ = ["CliContext"]


class CliContext:
    def __init__(self, home: Path | None) -> None:
        self.home = home
        self._store: Store | None = None

    def store(self, *, create: bool = True) -> Store:
        if self._store is None:
            self._store = Store.open(self.home, create=create)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
