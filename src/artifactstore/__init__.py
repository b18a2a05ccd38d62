"""artifact-store: a content-addressed registry for generated artifacts.

``from artifactstore import Store`` is the library's entry point (README,
"Local mode in one minute"). It is imported on first use, not with the package, so that the
CLI, whose every command imports this package, does not pay for the
database and hashing stack before it needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from artifactstore.store import Store

__all__ = ["Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from artifactstore.store import Store

        return Store
    raise AttributeError(f"module 'artifactstore' has no attribute {name!r}")
