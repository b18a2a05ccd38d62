"""RFC 9162 proofs over random trees: every honest proof verifies, every altered one fails.

The reference root below is RFC 9162's recursive definition written out, not
our code's decomposition into stored subtrees, so the two are checked against
each other.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.errors import ProofInvalid
from artifactstore.provenance import merkle


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, literally (``leaves`` are entries, not leaf hashes)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def entries(n: int, salt: int = 0) -> list[bytes]:
    return [hashlib.sha256(f"{salt}:{i}".encode()).digest() for i in range(n)]


def tree(items: list[bytes]) -> merkle.MemoryTree:
    return merkle.MemoryTree(merkle.leaf_hash(e) for e in items)


sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=sizes)
def test_every_inclusion_proof_verifies(data: st.DataObject, n: int) -> None:
    items = entries(n)
    t = tree(items)
    size = data.draw(st.integers(1, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = mth(items[:size])
    assert t.root(size) == root
    proof = merkle.inclusion_proof(index, size, t)
    merkle.verify_inclusion(index, size, merkle.leaf_hash(items[index]), proof, root)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=sizes)
def test_every_consistency_proof_verifies(data: st.DataObject, n: int) -> None:
    items = entries(n)
    t = tree(items)
    old = data.draw(st.integers(1, n), label="old")
    proof = merkle.consistency_proof(old, n, t)
    merkle.verify_consistency(old, n, mth(items[:old]), mth(items), proof)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(min_value=2, max_value=300))
def test_altered_inclusion_proofs_fail(data: st.DataObject, n: int) -> None:
    items = entries(n)
    t = tree(items)
    index = data.draw(st.integers(0, n - 1), label="index")
    root = mth(items)
    leaf = merkle.leaf_hash(items[index])
    proof = merkle.inclusion_proof(index, n, t)
    other = data.draw(st.integers(0, n - 1).filter(lambda i: i != index), label="other")
    attempts = [
        (index, n, merkle.leaf_hash(items[other]), proof),  # another entry
        (index, n, merkle.leaf_hash(b"\x00" * 32), proof),  # an altered entry
        (index, n, leaf, proof[:-1]),  # truncated
        (index, n, leaf, [*proof, proof[0]]),  # extended
        (index, n + 1, leaf, proof),  # the proof against the next tree's root
        (other, n, leaf, proof),  # wrong index
    ]
    if len(proof) >= 2 and proof[0] != proof[1]:
        attempts.append((index, n, leaf, [proof[1], proof[0], *proof[2:]]))  # swapped pair
    for i, (at, size, h, p) in enumerate(attempts):
        with pytest.raises(ProofInvalid):
            merkle.verify_inclusion(at, size, h, p, mth(entries(n + 1)) if size > n else root)
            pytest.fail(f"attempt {i} verified")


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(min_value=2, max_value=300))
def test_altered_consistency_proofs_fail(data: st.DataObject, n: int) -> None:
    items = entries(n)
    t = tree(items)
    old = data.draw(st.integers(1, n - 1), label="old")
    old_root, new_root = mth(items[:old]), mth(items)
    proof = merkle.consistency_proof(old, n, t)
    rewritten = list(items)
    victim = data.draw(st.integers(0, old - 1), label="victim")
    rewritten[victim] = hashlib.sha256(b"rewritten").digest()
    attempts = [
        (old, n, old_root, new_root, proof[:-1]),  # truncated
        (old, n, old_root, new_root, [*proof, proof[0]]),  # extended
        (old, n + 1, old_root, mth(entries(n + 1)), proof),  # against the next tree
        (old, n, mth(rewritten[:old]), new_root, proof),  # a rewritten old tree
        (old, n, old_root, mth(rewritten), proof),  # a rewritten log
        # the rewritten log's own proof, to its own root
        (old, n, old_root, mth(rewritten), merkle.consistency_proof(old, n, tree(rewritten))),
        (old, n, old_root, mth(items[: n - 1]), proof),  # a truncated log
    ]
    if old > 1:
        attempts.append((old - 1, n, old_root, new_root, proof))  # wrong old size
    if len(proof) >= 2 and proof[0] != proof[1]:
        attempts.append((old, n, old_root, new_root, [proof[1], proof[0], *proof[2:]]))
    for i, (m, size, a, b, p) in enumerate(attempts):
        with pytest.raises(ProofInvalid):
            merkle.verify_consistency(m, size, a, b, p)
            pytest.fail(f"attempt {i} verified")


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=0, max_value=200))
def test_the_frontier_gives_every_root_on_the_way(n: int) -> None:
    items = entries(n)
    frontier = merkle.Frontier()
    completed: dict[merkle.Node, bytes] = {}
    assert frontier.root() == mth([])
    for i, e in enumerate(items):
        frontier.push(merkle.leaf_hash(e), completed.__setitem__)
        assert frontier.root() == mth(items[: i + 1])
    full = tree(items)
    for (level, index), h in completed.items():
        assert full([(level, index)])[(level, index)] == h


def test_equal_sizes_and_shapes() -> None:
    items = entries(5)
    root = mth(items)
    merkle.verify_consistency(5, 5, root, root, [])
    with pytest.raises(ProofInvalid, match="two different roots"):
        merkle.verify_consistency(5, 5, root, mth(items[:4]), [])
    with pytest.raises(ProofInvalid, match="must be empty"):
        merkle.verify_consistency(5, 5, root, root, [root])
    with pytest.raises(ProofInvalid, match="not a SHA-256 hash"):
        merkle.verify_inclusion(0, 5, merkle.leaf_hash(items[0]), [b"short"], root)
    with pytest.raises(ProofInvalid, match="longer than any tree"):
        merkle.verify_inclusion(0, 5, merkle.leaf_hash(items[0]), [root] * 200, root)
    with pytest.raises(ProofInvalid, match="not below"):
        merkle.verify_inclusion(5, 5, merkle.leaf_hash(items[0]), [], root)
    single = mth(items[:1])
    merkle.verify_inclusion(0, 1, merkle.leaf_hash(items[0]), [], single)
    assert merkle.root(0, tree([])) == hashlib.sha256(b"").digest()


def test_decompose_names_aligned_perfect_subtrees() -> None:
    assert merkle.decompose(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert merkle.decompose(8, 13) == [(2, 2), (0, 12)]
    assert merkle.decompose(16, 32) == [(4, 1)]
