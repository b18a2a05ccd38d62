"""Tokens and namespace settings: who may do what, and what each namespace allows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from artifactstore.controlplane import namespaces, tokens
from artifactstore.model.clock import utc_iso
from artifactstore.model.identity import Namespace
from artifactstore.model.records import NamespaceSettings, TokenInfo
from artifactstore.services.core import Core

__all__ = ["AccessService"]

#: A token's ``last_used_at`` (operational state) is written at most this often.
USE_RECORDING = 60.0


class AccessService:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._used: dict[str, float] = {}

    def create_token(
        self, name: str, scopes: list[str], expires_in: float | None, actor: str
    ) -> tuple[TokenInfo, str]:
        """A new API token and its secret, which is shown once and never stored."""
        core = self._core
        expires_at = utc_iso(core.clock() + expires_in) if expires_in is not None else None
        with core.db.write() as conn:
            return tokens.create(conn, name=name, scopes=scopes, expires_at=expires_at, actor=actor)

    def list_tokens(self) -> list[TokenInfo]:
        with self._core.db.read() as conn:
            return tokens.list_tokens(conn)

    def revoke_token(self, token_id: str, actor: str | None = None) -> TokenInfo:
        with self._core.db.write() as conn:
            return tokens.revoke(conn, token_id, actor or self._core.actor)

    def authenticate(self, presented: str) -> TokenInfo | None:
        """The active token ``presented`` names, or None; records its last use."""
        with self._core.db.read() as conn:
            info = tokens.verify(conn, presented)
        if info is not None:
            self._record_use(info.id)
        return info

    def _record_use(self, token_id: str) -> None:
        now = self._core.clock()
        last = self._used.get(token_id)
        if last is not None and now - last < USE_RECORDING:
            return
        self._used[token_id] = now
        with self._core.db.write() as conn:
            tokens.record_use(conn, token_id, now)

    def token_count(self) -> int:
        with self._core.db.read() as conn:
            return tokens.count(conn)

    def namespace_settings(self, namespace: Namespace) -> dict[str, Any]:
        """The namespace's settings and ``used_bytes`` (what its quota counts)."""
        with self._core.db.read() as conn:
            settings = namespaces.get(conn, namespace).to_json()
            settings["used_bytes"] = namespaces.usage(conn, namespace, self._core.held_since())
        return settings

    def set_namespace_settings(
        self, namespace: Namespace, settings: Mapping[str, Any], actor: str
    ) -> dict[str, Any]:
        """Replace a namespace's settings; ``used_bytes`` (read-only) is ignored."""
        parsed = NamespaceSettings.from_json(
            {k: v for k, v in settings.items() if k != "used_bytes"}
        )
        with self._core.db.write() as conn:
            namespaces.put(conn, namespace, parsed, actor)
        return self.namespace_settings(namespace)

    def anonymous_namespaces(self) -> set[str]:
        """Namespaces whose packages anyone may read."""
        with self._core.db.read() as conn:
            return namespaces.anonymous(conn)

    def namespace_usage(self) -> dict[str, tuple[int, int | None]]:
        """(used bytes, quota or None) per namespace, for /metrics."""
        with self._core.db.read() as conn:
            return namespaces.usage_by_namespace(conn, self._core.held_since())
