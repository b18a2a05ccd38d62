"""RFC 9162 Merkle trees: hashes, proofs from stored subtrees, and their verification.

The tree is RFC 9162's (section 2.1): SHA-256, ``leaf = SHA-256(0x00 || entry)``,
``node = SHA-256(0x01 || left || right)``, the empty tree's root ``SHA-256()``,
and a tree of ``n > 1`` leaves split at the largest power of two below ``n``.

Generation never walks the leaves. Every range a proof needs (RFC 9162's
``MTH(D[a:b])`` in ``PATH`` and ``SUBPROOF``) is a subtree whose start is a
multiple of a power of two at least its width, so it is the right fold of at
most ``log2(n)`` *perfect* aligned subtrees (:func:`decompose`). A caller
names those as ``(level, index)`` (the leaves ``index * 2**level`` up to
``(index + 1) * 2**level``) and answers them all in one call of a
:data:`Subtrees` function: the control plane reads them from its node table,
a test or an auditor computes them in memory (:class:`MemoryTree`).

Verification (:func:`verify_inclusion`, :func:`verify_consistency`) is
RFC 9162 sections 2.1.3.2 and 2.1.4.2, step for step, and raises
:class:`~artifactstore.errors.ProofInvalid` naming the cause; it never
returns a bare bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence

from artifactstore.errors import ProofInvalid

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "MemoryTree",
    "Node",
    "Subtrees",
    "consistency_proof",
    "consistency_ranges",
    "decompose",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "range_hashes",
    "root",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]

#: A perfect aligned subtree: (level, index) covers leaves [index << level, (index+1) << level).
Node = tuple[int, int]
#: Answers the hashes of the perfect subtrees asked for (every one of them).
Subtrees = Callable[[Sequence[Node]], dict[Node, bytes]]

EMPTY_ROOT = hashlib.sha256(b"").digest()
#: Longest proof accepted: a tree of 2**64 leaves needs at most 2 * 64 hashes.
MAX_PROOF = 128


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def decompose(start: int, end: int) -> list[Node]:
    """The perfect aligned subtrees of ``[start, end)``, left to right.

    ``start`` must be a multiple of a power of two at least ``end - start``
    (every range RFC 9162's algorithms name is): the pieces are then the
    binary digits of the width, largest first.
    """
    out: list[Node] = []
    at = start
    width = end - start
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            out.append((level, at >> level))
            at += 1 << level
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    """The root of a range from its perfect pieces, largest first (the right edge)."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def range_hashes(ranges: Sequence[tuple[int, int]], subtrees: Subtrees) -> list[bytes]:
    """``MTH(D[a:b])`` of each range, from one call of ``subtrees``."""
    pieces = [decompose(a, b) for a, b in ranges]
    known = subtrees(sorted({node for nodes in pieces for node in nodes}))
    return [_fold([known[node] for node in nodes]) for nodes in pieces]


def root(size: int, subtrees: Subtrees) -> bytes:
    """The root hash of the first ``size`` leaves."""
    if size == 0:
        return EMPTY_ROOT
    return range_hashes([(0, size)], subtrees)[0]


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose roots are ``PATH(index, D[0:size])``, leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    out: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
    out.reverse()
    return out


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The ranges whose roots are ``PROOF(old, D[0:new])`` (RFC 9162 2.1.4.1)."""
    if not 0 < old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    out: list[tuple[int, int]] = []
    start, end, complete = 0, new, True
    m = old
    while True:
        n = end - start
        if m == n:
            if not complete:
                out.append((start, end))
            break
        k = _split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
            m -= k
            complete = False
    out.reverse()
    return out


def inclusion_proof(index: int, size: int, subtrees: Subtrees) -> list[bytes]:
    return range_hashes(inclusion_ranges(index, size), subtrees)


def consistency_proof(old: int, new: int, subtrees: Subtrees) -> list[bytes]:
    return range_hashes(consistency_ranges(old, new), subtrees) if old < new else []


def _check_hashes(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF:
        raise ProofInvalid(f"a proof of {len(proof)} hashes is longer than any tree needs")
    for h in proof:
        if len(h) != 32:
            raise ProofInvalid(f"a proof hash of {len(h)} bytes is not a SHA-256 hash")


def _sides(fn: int, sn: int, path: Sequence[bytes]) -> Iterator[tuple[bool, bytes]]:
    """RFC 9162's walk up the tree (2.1.3.2 step 4, 2.1.4.2 step 6): each proof hash
    with whether it is the left sibling; ProofInvalid when the proof's length does not
    match the path from ``fn`` in a tree whose last index is ``sn``."""
    for c in path:
        if sn == 0:
            raise ProofInvalid("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            yield True, c
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            yield False, c
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid("the proof is shorter than the path to the root")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` proves leaf hash ``leaf`` at ``index`` to be under
    (RFC 9162 2.1.3.2 steps 1 to 5); ProofInvalid for a proof of the wrong shape."""
    _check_hashes(proof)
    if not 0 <= index < size:
        raise ProofInvalid(f"leaf index {index} is not below the tree size {size}")
    r = leaf
    for left, c in _sides(index, size - 1, proof):
        r = node_hash(c, r) if left else node_hash(r, c)
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise ProofInvalid unless ``proof`` puts leaf hash ``leaf`` at ``index`` under
    ``expected_root`` in a tree of ``size`` leaves."""
    if root_from_inclusion(index, size, leaf, proof) != expected_root:
        raise ProofInvalid(
            f"the inclusion proof of leaf {index} does not lead to the root of the "
            f"tree of size {size}"
        )


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofInvalid unless ``proof`` shows the tree (``new``, ``new_root``)
    extends (``old``, ``old_root``): RFC 9162 2.1.4.2."""
    _check_hashes(proof)
    if not 0 < old <= new:
        raise ProofInvalid(f"no consistency proof exists from size {old} to size {new}")
    if old == new:
        if proof:
            raise ProofInvalid("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofInvalid(f"two different roots for the same tree size {old}")
        return
    if not proof:
        raise ProofInvalid("the consistency proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # step 2: a power of two, whose root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for left, c in _sides(fn, sn, path[1:]):  # step 6
        if left:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    if fr != old_root:
        raise ProofInvalid(f"the consistency proof does not lead to the old root (size {old})")
    if sr != new_root:
        raise ProofInvalid(f"the consistency proof does not lead to the new root (size {new})")


class Frontier:
    """The right edge of a growing tree: O(log n) perfect subtrees, leaf by leaf.

    What an auditor keeps while streaming every entry once: the root at any
    size on the way, and each perfect subtree as it completes (to compare
    with a stored copy), without holding the leaves.
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (level, hash), levels strictly decreasing

    def push(self, leaf: bytes, completed: Callable[[Node, bytes], None] | None = None) -> None:
        """Append a leaf hash; ``completed(node, hash)`` for every subtree it completes."""
        level, h = 0, leaf
        index = self.size
        if completed is not None:
            completed((0, index), h)
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            h = node_hash(left, h)
            level += 1
            index >>= 1
            if completed is not None:
                completed((level, index), h)
        self._stack.append((level, h))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        return _fold([h for _, h in self._stack])


class MemoryTree:
    """Every perfect subtree of a list of leaf hashes, in memory: a :data:`Subtrees`."""

    def __init__(self, leaves: Iterable[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def __call__(self, nodes: Sequence[Node]) -> dict[Node, bytes]:
        return {(level, index): self.levels[level][index] for level, index in nodes}

    def root(self, size: int | None = None) -> bytes:
        return root(self.size if size is None else size, self)
