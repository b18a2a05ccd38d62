"""Signatures through the library: recorded as events, checked against the namespace's policy,
carried by the commit in its transaction, and never changing the version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from artifactstore.errors import PackageNotFound, SignatureInvalid, SignatureRequired
from artifactstore.model.envelope import Envelope, Signature
from artifactstore.model.trust import TrustEntry
from artifactstore.provenance.dsse import PackageRef, sign_package, verify_manifest
from artifactstore.provenance.keys import PrivateKey, generate
from artifactstore.store import Store
from tests.conftest import make_tree

pytestmark = pytest.mark.configs("embedded", "scaleout")


def _trust(
    store: Store, ns: str, *keys: PrivateKey, require: bool, expires: str | None = None
) -> dict[str, Any]:
    entries = [TrustEntry.of(k.public.raw, expires).to_json() for k in keys]
    return store.set_namespace_settings(ns, {"trusted_keys": entries, "require_signature": require})


def _types(store: Store, after: int) -> list[str]:
    return [e.type for e in store.events(after=after)]


def test_push_with_a_key_commits_the_signature_with_the_version(
    store: Store, tmp_path: Path
) -> None:
    key = generate()
    src = make_tree(tmp_path / "src", {"a.txt": b"signed bytes"})
    before = len(store.events())
    pushed = store.push("ci/app:1", [src], sign=key)
    assert _types(store, before)[-2:] == ["package.committed", "signature.added"]
    [envelope] = store.signatures("ci/app:1")
    record = store.show("ci/app:1")
    assert verify_manifest(envelope, record.manifest_cbor, [key.public]).signed_by == (key.key_id,)
    assert record.digest == pushed.record.digest
    # The same push again (same key, identical content) adds nothing.
    count = len(store.events())
    store.push("ci/app:1", [src], sign=key)
    assert store.signatures("ci/app:1") == [envelope] and len(store.events()) == count


def test_signing_later_never_changes_the_version(store: Store, tmp_path: Path) -> None:
    store.push("ci/app:1", [make_tree(tmp_path / "src", {"a.txt": b"x"})])
    before = store.show("ci/app:1")
    first, second = generate(), generate()
    store.sign("ci/app:1", first)
    store.sign("ci/app:1", second)
    count = len(store.events())
    store.sign("ci/app:1", first)  # the same envelope again: a no-op
    assert len(store.events()) == count
    after = store.show("ci/app:1")
    assert (after.digest, after.sha256, after.manifest_cbor) == (
        before.digest,
        before.sha256,
        before.manifest_cbor,
    )
    signers = [
        verify_manifest(e, after.manifest_cbor, [first.public, second.public]).signed_by
        for e in store.signatures("ci/app:1")
    ]
    assert signers == [(first.key_id,), (second.key_id,)]


def test_a_signature_over_another_version_is_refused(store: Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": b"x"})
    store.push("ci/app:1", [src])
    store.push("ci/app:2", [src])
    key = generate()
    other = sign_package(PackageRef.of(store.show("ci/app:2").manifest), key)
    with pytest.raises(SignatureInvalid, match="subject mismatch"):
        store.add_signature("ci/app:1", other)
    assert store.signatures("ci/app:1") == []
    with pytest.raises(PackageNotFound):
        store.signatures("ci/app:3")


def test_a_trusted_keys_bad_signature_is_refused_even_without_require(
    store: Store, tmp_path: Path
) -> None:
    key = generate()
    store.push("ci/app:1", [make_tree(tmp_path / "src", {"a.txt": b"x"})])
    _trust(store, "ci", key, require=False)
    good = sign_package(PackageRef.of(store.show("ci/app:1").manifest), key)
    sig = good.signatures[0]
    flipped = bytes([sig.sig[0] ^ 1]) + sig.sig[1:]
    bad = Envelope(good.payload_type, good.payload, (Signature(sig.keyid, flipped),))
    with pytest.raises(SignatureInvalid, match="bad signature"):
        store.add_signature("ci/app:1", bad)
    # An unknown key's signature cannot be checked by the store: recorded as sent.
    assert store.add_signature(
        "ci/app:1", sign_package(PackageRef.of(store.show("ci/app:1").manifest), generate())
    )
    assert store.add_signature("ci/app:1", good)
    assert not store.add_signature("ci/app:1", good)


def test_require_refuses_unsigned_untrusted_and_expired_commits(
    store: Store, tmp_path: Path
) -> None:
    trusted, stranger, lapsed = generate(), generate(), generate()
    src = make_tree(tmp_path / "src", {"a.txt": b"policy"})
    _trust(store, "ci", trusted, require=True)
    store.set_namespace_settings(
        "ci",
        {
            "trusted_keys": [
                TrustEntry.of(trusted.public.raw).to_json(),
                TrustEntry.of(lapsed.public.raw, "2020-01-01T00:00:00.000000Z").to_json(),
            ],
            "require_signature": True,
        },
    )
    count = len(store.events())
    with pytest.raises(SignatureRequired, match="refuses unsigned commits"):
        store.push("ci/app:1", [src])
    with pytest.raises(SignatureInvalid, match="untrusted key"):
        store.push("ci/app:1", [src], sign=stranger)
    with pytest.raises(SignatureInvalid, match="expired trust"):
        store.push("ci/app:1", [src], sign=lapsed)
    # Nothing of the refused commits was committed (the blobs' own event may remain).
    assert "package.committed" not in _types(store, count)
    with pytest.raises(PackageNotFound):
        store.show("ci/app:1")
    store.push("ci/app:1", [src], sign=trusted)
    assert len(store.signatures("ci/app:1")) == 1
    # A later signature in a namespace that requires them must be by a trusted key too.
    with pytest.raises(SignatureInvalid, match="untrusted key"):
        store.sign("ci/app:1", stranger)
    # Other namespaces are not bound by ci's policy.
    store.push("qa/app:1", [src])


def test_the_policy_is_part_of_the_settings_document(store: Store) -> None:
    key = generate()
    settings = _trust(store, "ci", key, require=True, expires="2030-01-01")
    assert settings["require_signature"] is True
    [entry] = settings["trusted_keys"]
    assert entry["key_id"] == key.key_id and entry["expires"] == "2030-01-01T00:00:00.000000Z"
    assert entry["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(Exception, match="needs at least one trusted key"):
        store.set_namespace_settings("qa", {"require_signature": True})
    logged = [e for e in store.events() if e.type == "namespace.updated"][-1]
    assert logged.payload["settings"]["trusted_keys"][0]["key_id"] == key.key_id
