"""Tokens and namespaces (services/access.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from artifactstore.facade import Facade
from artifactstore.model import records
from artifactstore.model.identity import Namespace

__all__ = ["AccessVerbs"]


class AccessVerbs:
    def create_token(
        self: Facade,
        name: str,
        scopes: list[str],
        *,
        expires_in: float | None = None,
        actor: str | None = None,
    ) -> tuple[records.TokenInfo, str]:
        """A new API token and its secret, which is shown once and never stored."""
        return self.services.access.create_token(name, scopes, expires_in, actor or self.actor)

    def list_tokens(self: Facade) -> list[records.TokenInfo]:
        return self.services.access.list_tokens()

    def revoke_token(self: Facade, token_id: str, actor: str | None = None) -> records.TokenInfo:
        return self.services.access.revoke_token(token_id, actor)

    def authenticate(self: Facade, presented: str) -> records.TokenInfo | None:
        """The active token ``presented`` names, or None; records its last use."""
        return self.services.access.authenticate(presented)

    def authentication_failed(
        self: Facade, client: str, *, limit: int, window: float
    ) -> int | None:
        """Count a failed authentication of ``client`` (shared by every replica); seconds to
        wait if past ``limit`` in ``window`` seconds, else None."""
        return self.services.access.authentication_failed(client, limit=limit, window=window)

    def known_token(self: Facade, presented: str) -> records.TokenInfo | None:
        """``authenticate``'s answer if this process gave it since the last commit to the
        database (no I/O but a version probe); None: call ``authenticate``."""
        return self.services.access.known_token(presented)

    def token_count(self: Facade) -> int:
        return self.services.access.token_count()

    def namespace_settings(self: Facade, namespace: str) -> dict[str, Any]:
        """The namespace's settings and ``used_bytes`` (what its quota counts)."""
        return self.services.access.namespace_settings(Namespace(namespace))

    def set_namespace_settings(
        self: Facade, namespace: str, settings: Mapping[str, Any], actor: str | None = None
    ) -> dict[str, Any]:
        """Replace a namespace's settings; ``used_bytes`` (read-only) is ignored."""
        return self.services.access.set_namespace_settings(
            Namespace(namespace), settings, actor or self.actor
        )

    def anonymous_namespaces(self: Facade) -> set[str]:
        """Namespaces whose packages anyone may read."""
        return self.services.access.anonymous_namespaces()

    def namespace_usage(self: Facade) -> dict[str, tuple[int, int | None]]:
        """(used bytes, quota or None) per namespace, for /metrics."""
        return self.services.access.namespace_usage()
