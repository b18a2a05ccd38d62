"""Typed identities, parsed once at the edge (rules in docs/architecture.md, "Names and paths").

Below the edge nothing handles raw strings for digests, names or references:
construct one of these and it is valid, or construction raised.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

import blake3 as _blake3

from artifactstore.errors import InvalidName, InvalidReference

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "BlobDigests",
    "Digest",
    "Namespace",
    "PackageName",
    "Reference",
    "Version",
]

Algorithm = Literal["blake3", "sha256"]
ALGORITHMS: tuple[Algorithm, ...] = ("blake3", "sha256")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SEGMENT = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
_VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")


@dataclass(frozen=True, slots=True)
class Digest:
    """A content address ``<algo>:<lowercase hex>``; both algorithms are 32 bytes."""

    algorithm: Algorithm
    hex: str

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InvalidReference(f"unknown digest algorithm {self.algorithm!r}")
        if not _HEX64.fullmatch(self.hex):
            raise InvalidReference(
                f"digest hex must be 64 lowercase hex characters, got {self.hex[:80]!r}"
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        algo, sep, hexpart = text.partition(":")
        if not sep:
            raise InvalidReference(f"digest must look like 'blake3:<hex>', got {text[:80]!r}")
        if algo not in ALGORITHMS:
            raise InvalidReference(f"unknown digest algorithm {algo[:20]!r} (use blake3 or sha256)")
        return cls(algo, hexpart)

    @classmethod
    def computed(cls, algorithm: Algorithm, hexdigest: str) -> Digest:
        """A hasher's own output, valid by construction: the pattern check is
        skipped because a push of many small files makes two digests per file,
        and the check cost more than hashing them."""
        digest = object.__new__(cls)
        object.__setattr__(digest, "algorithm", algorithm)
        object.__setattr__(digest, "hex", hexdigest)
        return digest

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


@dataclass(frozen=True, slots=True)
class BlobDigests:
    """Both digests and the size of one blob, as computed in a single pass."""

    blake3: Digest
    sha256: Digest
    size: int

    @classmethod
    def computed(cls, blake3: str, sha256: str, size: int) -> BlobDigests:
        """From the two hashers' hex digests (see :meth:`Digest.computed`)."""
        return cls(Digest.computed("blake3", blake3), Digest.computed("sha256", sha256), size)

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview) -> BlobDigests:
        """Both digests of bytes in memory, on this thread (small files, manifests)."""
        return cls.computed(
            _blake3.blake3(data).hexdigest(), hashlib.sha256(data).hexdigest(), len(data)
        )

    def get(self, algorithm: Algorithm) -> Digest:
        return self.blake3 if algorithm == "blake3" else self.sha256

    def matches(self, expected: Digest) -> bool:
        return self.get(expected.algorithm) == expected


def _segment(kind: str, value: str, limit: int) -> str:
    if len(value) > limit or not _SEGMENT.fullmatch(value):
        raise InvalidName(
            f"invalid {kind} {value[:80]!r}: use lowercase letters and digits separated by "
            f"single '.', '_' or '-', at most {limit} characters"
        )
    return value


@dataclass(frozen=True, slots=True)
class Namespace:
    value: str

    def __post_init__(self) -> None:
        _segment("namespace", self.value, 64)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class PackageName:
    value: str

    def __post_init__(self) -> None:
        _segment("package name", self.value, 128)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Version:
    value: str

    def __post_init__(self) -> None:
        if not _VERSION.fullmatch(self.value):
            raise InvalidName(
                f"invalid version {self.value[:80]!r}: start with a letter, digit or '_', "
                "then letters, digits, '.', '_', '+' or '-', at most 128 characters"
            )

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Reference:
    """``NS/NAME:VERSION`` or ``NS/NAME@<digest>`` (exactly one of version, digest)."""

    namespace: Namespace
    name: PackageName
    version: Version | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        if (self.version is None) == (self.digest is None):
            raise InvalidReference("a reference names exactly one of a version or a digest")

    @classmethod
    def parse(cls, text: str) -> Reference:
        hint = "expected NAMESPACE/NAME:VERSION or NAMESPACE/NAME@blake3:<hex>"
        ns, sep, rest = text.partition("/")
        if not sep:
            raise InvalidReference(f"invalid reference {text[:200]!r}: {hint}")
        if "@" in rest:
            name, _, dig = rest.partition("@")
            return cls(Namespace(ns), PackageName(name), digest=Digest.parse(dig))
        name, sep, ver = rest.partition(":")
        if not sep:
            raise InvalidReference(f"invalid reference {text[:200]!r}: {hint}")
        return cls(Namespace(ns), PackageName(name), version=Version(ver))

    @classmethod
    def of(cls, namespace: str, name: str, version: str) -> Reference:
        return cls(Namespace(namespace), PackageName(name), version=Version(version))

    def __str__(self) -> str:
        tail = f":{self.version}" if self.version is not None else f"@{self.digest}"
        return f"{self.namespace}/{self.name}{tail}"
