"""The store's checkpoints and proofs, checked by a verifier written here from RFC 9162's
definitions (sections 2.1.3.1 and 2.1.4.1, recursively) and C2SP's note format, with
nothing of ours but the store that produced them."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from artifactstore.controlplane import eventlog
from artifactstore.model.blob_events import TokenRevoked
from artifactstore.store import Store
from tests.provenance.test_checkpoint import spec_verify


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root_from_path(m: int, n: int, leaf: bytes, path: list[bytes]) -> bytes:
    """PATH(m, D[n]) read backwards: the last hash is the sibling nearest the root."""
    if n == 1:
        assert not path, "proof too long"
        return leaf
    assert path, "proof too short"
    k = split(n)
    if m < k:
        return h(b"\x01" + root_from_path(m, k, leaf, path[:-1]) + path[-1])
    return h(b"\x01" + path[-1] + root_from_path(m - k, n - k, leaf, path[:-1]))


def roots_from_subproof(
    m: int, n: int, path: list[bytes], complete: bool, old_root: bytes
) -> tuple[bytes, bytes]:
    """SUBPROOF(m, D[n], b) read backwards: the (old, new) roots of this subtree."""
    if m == n:
        if complete:
            assert not path, "proof too long"
            return old_root, old_root
        assert len(path) == 1, "proof of the wrong length"
        return path[0], path[0]
    assert path, "proof too short"
    k = split(n)
    if m <= k:
        old, new = roots_from_subproof(m, k, path[:-1], complete, old_root)
        return old, h(b"\x01" + new + path[-1])
    old, new = roots_from_subproof(m - k, n - k, path[:-1], False, old_root)
    return h(b"\x01" + path[-1] + old), h(b"\x01" + path[-1] + new)


def test_the_store_s_output_verifies_by_the_specs(store: Store) -> None:
    sizes = {}
    for batch in (1, 6, 9, 17, 31, 64, 3):
        with store.db.write() as conn:
            eventlog.append_many(conn, [TokenRevoked(f"t{i}") for i in range(batch)], "t")
        note = store.log_checkpoint()
        pem = store.log_key().pem.encode()
        raw = load_pem_public_key(pem).public_bytes_raw()  # type: ignore[union-attr]
        origin, size, root = spec_verify(note, store.settings.log_origin, raw)
        assert origin == store.settings.log_origin
        sizes[size] = root
    events = {e.seq: e for e in store.events()}
    size, root = max(sizes.items())
    for seq in range(1, size + 1):
        proof = store.log_inclusion(seq, size).to_json()
        entry = bytes.fromhex(events[seq].hash.removeprefix("blake3:"))
        path = [base64.b64decode(x) for x in proof["hashes"]]
        assert root_from_path(seq - 1, size, h(b"\x00" + entry), path) == root
    for old, old_root in sizes.items():
        proof = store.log_consistency(old, size).to_json()
        path = [base64.b64decode(x) for x in proof["hashes"]]
        assert roots_from_subproof(old, size, path, True, old_root) == (old_root, root)
        if path:  # and the same verifier refuses an altered proof
            path[0] = h(path[0])
            assert roots_from_subproof(old, size, path, True, old_root) != (old_root, root)
