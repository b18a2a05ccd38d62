"""API tokens: created and revoked as events, stored only as a hash.

A token reads ``ast_<id>_<secret>``: ``id`` (16 characters) finds the row,
``secret`` (256 random bits) is checked against the stored SHA-256 with a
constant-time comparison. The secret exists only in the caller's hands: not
in the database, the event log, logs or error messages. SHA-256 without a
slow KDF is enough because the secret is random and 256 bits long, not a
password.

Scopes: ``admin`` (everything), or ``NS:read``, ``NS:write``, ``NS:delete``,
``NS:admin`` for one namespace.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.eventlog import append
from artifactstore.errors import InvalidInput, NotFound
from artifactstore.model.clock import utc_now
from artifactstore.model.events import TokenCreated, TokenRevoked
from artifactstore.model.records import TokenInfo

__all__ = [
    "TOKEN_PREFIX",
    "check_scopes",
    "count",
    "create",
    "find",
    "list_tokens",
    "record_use",
    "revoke",
    "verify",
]

TOKEN_PREFIX = "ast_"  # noqa: S105 - a public prefix, not a secret
_ID_LEN = 16
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
#: ``admin`` and ``metrics`` (every figure of /metrics) are global; the rest per namespace.
_SCOPE = re.compile(r"admin|metrics|[a-z0-9]+(?:[._-][a-z0-9]+)*:(?:read|write|delete|admin)")
_TOKEN = re.compile(rf"{TOKEN_PREFIX}([a-z2-7]{{{_ID_LEN}}})_([A-Za-z0-9_-]{{43}})")


def _hash(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> tuple[str, ...]:
    if not scopes:
        raise InvalidInput("a token needs at least one scope (e.g. ci:read, ci:write or admin)")
    for scope in scopes:
        if len(scope) > 80 or not _SCOPE.fullmatch(scope):
            raise InvalidInput(
                f"invalid scope {scope[:80]!r}: "
                "use admin, metrics or NAMESPACE:read|write|delete|admin"
            )
    return tuple(sorted(set(scopes)))


def create(
    conn: Connection,
    *,
    name: str,
    scopes: list[str],
    expires_at: str | None,
    actor: str,
) -> tuple[TokenInfo, str]:
    """Append ``token.created``; returns the token and its secret (shown once)."""
    if not name or len(name) > 128 or any(ord(c) < 0x20 for c in name):
        raise InvalidInput("a token name is 1 to 128 printable characters")
    checked = check_scopes(scopes)
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LEN))
    secret = secrets.token_urlsafe(32)  # 256 bits, 43 characters
    append(conn, TokenCreated(token_id, name, _hash(secret), tuple(checked), expires_at), actor)
    info = find(conn, token_id)
    assert info is not None
    return info, f"{TOKEN_PREFIX}{token_id}_{secret}"


def _info(row: Any, last_used: float | None = None) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        scopes=tuple(json.loads(row.scopes)),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=last_used,
    )


def find(conn: Connection, token_id: str) -> TokenInfo | None:
    row = conn.execute(select(t.tokens).where(t.tokens.c.id == token_id)).first()
    return None if row is None else _info(row)


def list_tokens(conn: Connection) -> list[TokenInfo]:
    usage = {r.id: r.last_used_at for r in conn.execute(select(t.token_usage))}
    rows = conn.execute(select(t.tokens).order_by(t.tokens.c.created_at, t.tokens.c.id))
    return [_info(r, usage.get(r.id)) for r in rows]


def revoke(conn: Connection, token_id: str, actor: str) -> TokenInfo:
    info = find(conn, token_id)
    if info is None:
        raise NotFound(f"no token {token_id[:40]!r}: see 'artifactstore token list'")
    if info.revoked_at is None:
        append(conn, TokenRevoked(token_id), actor)
    revoked = find(conn, token_id)
    assert revoked is not None
    return revoked


def verify(conn: Connection, presented: str) -> TokenInfo | None:
    """The active token ``presented`` names, or None (unknown, wrong, expired, revoked)."""
    m = _TOKEN.fullmatch(presented)
    if m is None:
        return None
    row = conn.execute(select(t.tokens).where(t.tokens.c.id == m.group(1))).first()
    expected = row.secret_hash if row is not None else _hash("")  # same work either way
    if not hmac.compare_digest(expected, _hash(m.group(2))) or row is None:
        return None
    info = _info(row)
    return info if info.active(utc_now()) else None


def record_use(conn: Connection, token_id: str, now: float) -> None:
    """Note the token's last use (operational state, outside the log)."""
    conn.execute(delete(t.token_usage).where(t.token_usage.c.id == token_id))
    conn.execute(insert(t.token_usage).values(id=token_id, last_used_at=now))


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(t.tokens)).scalar_one())
