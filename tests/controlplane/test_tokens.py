"""Tokens in the control plane: secrets shown once, hashed, revocable, expiring."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactstore.controlplane.tokens import TOKEN_PREFIX
from artifactstore.errors import InvalidInput, NotFound
from artifactstore.store import Store
from tests.matrix import StoreConfig

pytestmark = pytest.mark.configs("embedded", "scaleout")


@pytest.fixture
def store(tmp_path: Path, store_config: StoreConfig) -> Iterator[Store]:
    with Store.open(tmp_path / "home", actor="test:admin", **store_config.overrides()) as s:
        yield s


@pytest.mark.configs("embedded")  # reads the SQLite file behind the store's back
def test_secret_is_random_prefixed_and_only_its_hash_is_stored(
    store: Store, tmp_path: Path
) -> None:
    info, secret = store.create_token("ci-bot", ["ci:write", "ci:read"])
    assert secret.startswith(TOKEN_PREFIX)
    assert len(secret.split("_", 2)[2]) >= 43  # 256 bits in URL-safe base64
    other = store.create_token("ci-bot", ["ci:read"])[1]
    assert other != secret
    assert info.scopes == ("ci:read", "ci:write")
    db = sqlite3.connect(tmp_path / "home" / "artifactstore.db")
    dumped = json.dumps([list(r) for r in db.execute("SELECT * FROM tokens")])
    dumped += json.dumps([list(r) for r in db.execute("SELECT * FROM events")])
    db.close()
    assert secret not in dumped and secret[21:] not in dumped


def test_authenticate_and_revoke(store: Store) -> None:
    info, secret = store.create_token("bot", ["ci:read"])
    found = store.authenticate(secret)
    assert found is not None and found.id == info.id
    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate("ast_" + "a" * 16 + "_" + "x" * 43) is None
    assert store.authenticate("garbage") is None
    store.revoke_token(info.id)
    assert store.authenticate(secret) is None
    listed = {t.id: t for t in store.list_tokens()}
    assert listed[info.id].revoked_at is not None
    assert listed[info.id].last_used_at is not None  # used once before revocation


def test_expired_token_is_refused(store: Store) -> None:
    _info, secret = store.create_token("short", ["ci:read"], expires_in=0.05)
    time.sleep(0.1)
    assert store.authenticate(secret) is None


@pytest.mark.parametrize(
    "scopes",
    [[], ["ci"], ["ci:root"], ["CI:read"], ["admin:read:x"], ["*:read"], ["x" * 100 + ":read"]],
)
def test_bad_scopes_are_refused(store: Store, scopes: list[str]) -> None:
    with pytest.raises(InvalidInput):
        store.create_token("bad", scopes)


def test_revoking_an_unknown_token_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.revoke_token("nosuchtoken")


def test_tokens_survive_rebuild_with_their_actor(store: Store) -> None:
    info, secret = store.create_token("bot", ["ci:read"], actor="admin:alice")
    store.revoke_token(info.id, actor="admin:bob")
    before = [t.to_json() for t in store.list_tokens()]
    store.rebuild()
    after = [t.to_json() for t in store.list_tokens()]
    assert before == after
    assert after[0]["created_by"] == "admin:alice"
    assert [e.actor for e in store.events() if e.type.startswith("token.")] == [
        "admin:alice",
        "admin:bob",
    ]
    assert store.authenticate(secret) is None


def test_namespace_settings(store: Store) -> None:
    default: dict[str, object] = {
        "anonymous_read": False,
        "quota_bytes": None,
        "movable_tags": [],
        "trusted_keys": [],
        "require_signature": False,
        "used_bytes": 0,
    }
    assert store.namespace_settings("ci") == default
    assert store.set_namespace_settings("ci", {"anonymous_read": True}) == {
        **default,
        "anonymous_read": True,
    }
    assert store.anonymous_namespaces() == {"ci"}
    with pytest.raises(InvalidInput):
        store.set_namespace_settings("ci", {"anonymous_read": "yes"})
    with pytest.raises(InvalidInput):
        store.set_namespace_settings("ci", {"quota": 1})
