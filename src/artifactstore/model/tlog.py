"""The transparency log's values: checkpoints, proofs and an audit's findings.

Pure values with one JSON form each (docs/provenance.md, "Transparency
log"): hashes travel as standard base64 with padding. Parsing a proof from
JSON refuses anything but the documented shape with ``InvalidInput``, so a
hostile or damaged proof file is a clear error, never a crash. The signed
note a checkpoint travels in is ``provenance/checkpoint.py``'s.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from artifactstore.errors import InvalidInput

__all__ = [
    "AuditFinding",
    "AuditReport",
    "Checkpoint",
    "ConsistencyProof",
    "InclusionProof",
    "LogKey",
    "b64",
    "entry_of",
    "unb64",
]

#: A proof never needs more hashes than this (a tree of 2**64 leaves: 2 * 64).
_MAX_HASHES = 128
_MAX_SIZE = 2**63 - 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, what: str, length: int | None = 32) -> bytes:
    """Standard base64 (with padding) of ``length`` bytes, or InvalidInput naming ``what``."""
    if not isinstance(text, str) or not text.isascii():
        raise InvalidInput(f"{what} must be a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} is not standard base64: {text[:60]!r}") from None
    if length is not None and len(data) != length:
        raise InvalidInput(f"{what} decodes to {len(data)} bytes, not {length}")
    if b64(data) != text:
        raise InvalidInput(f"{what} is not in canonical base64 form: {text[:60]!r}")
    return data


def entry_of(chain_hash: str) -> bytes:
    """The log entry of an event: the 32 raw bytes of its chain hash ``blake3:<hex>``."""
    algo, sep, hexdigest = chain_hash.partition(":")
    try:
        raw = bytes.fromhex(hexdigest)
    except ValueError:
        raw = b""
    if algo != "blake3" or not sep or len(raw) != 32 or raw.hex() != hexdigest:
        raise InvalidInput(f"{chain_hash[:80]!r} is not an event chain hash (blake3:<64 hex>)")
    return raw


def _size(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_SIZE:
        raise InvalidInput(f"{what} must be a whole number from {minimum} to {_MAX_SIZE}")
    return value


def _hashes(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > _MAX_HASHES:
        raise InvalidInput(f"hashes must be a list of at most {_MAX_HASHES} base64 hashes")
    return tuple(unb64(h, f"hashes[{i}]") for i, h in enumerate(value))


def _object(data: object, keys: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping) or set(data) != keys:
        raise InvalidInput(f"{what} must be a JSON object with exactly {sorted(keys)}")
    return data


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head's body (C2SP ``tlog-checkpoint``): the first ``size`` entries
    of log ``origin`` hash to ``root``. ``extensions``: lines after the root, kept as
    given."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "tree_size": self.size, "root_hash": b64(self.root)}


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 ``PATH(leaf_index, D[0:tree_size])``, leaf side first."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "hashes": [b64(h) for h in self.hashes],
        }

    @classmethod
    def from_json(cls, data: object) -> InclusionProof:
        body = _object(data, {"leaf_index", "tree_size", "hashes"}, "an inclusion proof")
        return cls(
            _size(body["leaf_index"], "leaf_index", 0),
            _size(body["tree_size"], "tree_size", 1),
            _hashes(body["hashes"]),
        )


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 ``PROOF(old_size, D[0:new_size])`` (empty when the sizes are equal)."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "hashes": [b64(h) for h in self.hashes],
        }

    @classmethod
    def from_json(cls, data: object) -> ConsistencyProof:
        body = _object(data, {"old_size", "new_size", "hashes"}, "a consistency proof")
        return cls(
            _size(body["old_size"], "old_size", 1),
            _size(body["new_size"], "new_size", 1),
            _hashes(body["hashes"]),
        )


@dataclass(frozen=True)
class LogKey:
    """The log's public key: PEM SubjectPublicKeyInfo and the C2SP verifier key
    ``<name>+<hex key hash>+<base64(0x01 || public key)>``."""

    name: str
    pem: str
    vkey: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "public_key": self.pem, "vkey": self.vkey}


@dataclass(frozen=True)
class AuditFinding:
    """One saved checkpoint's verdict: ``problem`` None when the log extends it."""

    name: str
    size: int
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.name, "tree_size": self.size, "problem": self.problem}


@dataclass
class AuditReport:
    """What ``log audit`` found: each checkpoint, and trouble of the log itself
    (a broken chain, stored tree nodes that disagree with the events)."""

    size: int = 0
    root: bytes = b""
    checkpoints: list[AuditFinding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(f.problem is None for f in self.checkpoints)

    def failing(self) -> Sequence[AuditFinding]:
        return [f for f in self.checkpoints if f.problem is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tree_size": self.size,
            "root_hash": b64(self.root),
            "checkpoints": [f.to_json() for f in self.checkpoints],
            "problems": list(self.problems),
        }
