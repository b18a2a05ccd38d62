"""Tokens and namespace settings: who may do what, and what each namespace allows."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from artifactstore.controlplane import namespaces, throttle, tokens
from artifactstore.model.clock import TIME_FORMAT, utc_iso
from artifactstore.model.identity import Namespace
from artifactstore.model.records import NamespaceSettings, TokenInfo
from artifactstore.services.core import Core

__all__ = ["AccessService"]

#: A token's ``last_used_at`` (operational state) is written at most this often.
USE_RECORDING = 60.0
#: Verified tokens a process remembers (more: it starts over).
VERIFIED_MAX = 10_000


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that verified, the revocation stamp read just before, and when it
    expires (POSIX time; ``verify`` compares the same instant as text, which costs
    a clock formatting per request)."""

    info: TokenInfo
    stamp: tuple[object, ...]
    expires: float

    def active(self) -> bool:
        return time.time() < self.expires


def _expiry(info: TokenInfo) -> float:
    if info.expires_at is None:
        return math.inf
    return datetime.strptime(info.expires_at, TIME_FORMAT).replace(tzinfo=UTC).timestamp()


def _cache_key(presented: str) -> bytes:
    """What the cache of verified tokens is keyed by: a hash, so no secret stays in memory."""
    return hashlib.sha256(presented.encode()).digest()


class AccessService:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._used: dict[str, float] = {}
        self._verified: dict[bytes, _Verified] = {}

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
        db = self._core.db
        key = _cache_key(presented)
        stamp = tokens.revocation_stamp(db)  # before the snapshot: see known_token
        with db.read() as conn:
            info = tokens.verify(conn, presented)
        if info is None:
            self._verified.pop(key, None)
            return None
        self._record_use(info.id)
        if stamp is not None:
            if len(self._verified) >= VERIFIED_MAX:
                self._verified.clear()
            self._verified[key] = _Verified(info, stamp, _expiry(info))
        return info

    def known_token(self, presented: str) -> TokenInfo | None:
        """The token ``presented`` names if :meth:`authenticate` found it active and no
        token was revoked since, by this process or another; None means "ask
        :meth:`authenticate`".

        It reads nothing but the revocation stamp (``tokens.revocation_stamp``:
        microseconds on the database's probe connection, no thread needed), so a
        server asks it first. Any revocation sends the next request of every
        token, in every process, to :meth:`authenticate`. The expiry is checked
        here against the time, and a token whose last use is due to be recorded
        (a write) is not answered either.
        """
        hit = self._verified.get(_cache_key(presented))
        if hit is None or self._use_due(hit.info.id) or not hit.active():
            return None
        return hit.info if tokens.revocation_stamp(self._core.db) == hit.stamp else None

    def authentication_failed(self, client: str, *, limit: int, window: float) -> int | None:
        """Count a failed authentication of ``client`` where every replica sees it; seconds
        to wait if it is past ``limit`` failures in ``window`` seconds (else None)."""
        # Not durable: a power loss may forget the last failures, which only makes the
        # count start over; a flood of bad tokens then costs no fsync per request.
        with self._core.db.write(durable=False) as conn:
            return throttle.fail(conn, client, self._core.clock(), limit=limit, window=window)

    def _use_due(self, token_id: str) -> bool:
        last = self._used.get(token_id)
        return last is None or self._core.clock() - last >= USE_RECORDING

    def _record_use(self, token_id: str) -> None:
        if not self._use_due(token_id):
            return
        now = self._core.clock()
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
