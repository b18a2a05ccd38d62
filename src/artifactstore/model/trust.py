"""A namespace's trusted signing keys as values (docs/provenance.md, "Trust and require").

Pure: an Ed25519 public key is 32 bytes, and its PEM SubjectPublicKeyInfo is
those bytes behind a fixed 12-byte DER prefix, so a trust entry is parsed,
normalised and given its key id here, without a crypto library. The entries
live in the namespace's settings document (``namespace.updated``), so the
policy at any point of the log replays from it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from artifactstore.errors import InvalidInput
from artifactstore.model.clock import TIME_FORMAT

__all__ = ["MAX_TRUSTED_KEYS", "TrustEntry", "parse_expiry"]

#: Most trusted keys per namespace.
MAX_TRUSTED_KEYS = 32
#: DER of SubjectPublicKeyInfo { AlgorithmIdentifier { id-Ed25519 }, BIT STRING (32 bytes) }.
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")
_PEM = re.compile(
    r"^-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----\s*$"
)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _raw_key(text: str) -> bytes:
    """The 32 raw bytes of a PEM SubjectPublicKeyInfo Ed25519 key, or of base64 raw bytes."""
    if len(text) > 4096:
        raise InvalidInput("a public key is at most 4096 characters")
    pem = _PEM.match(text.strip())
    try:
        body = "".join((pem.group(1) if pem else text.strip()).split())
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("public_key is neither a PEM public key nor base64") from None
    if pem:
        if len(data) != 44 or not data.startswith(_ED25519_SPKI):
            raise InvalidInput("public_key is not an Ed25519 PEM SubjectPublicKeyInfo key")
        return data[12:]
    if len(data) != 32:
        raise InvalidInput("a raw public_key is the 32 bytes of an Ed25519 key, in base64")
    return data


def parse_expiry(text: str) -> str:
    """An RFC 3339 date or time, in the event time format (UTC); a date means its midnight UTC."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"expires {text[:64]!r} is not an RFC 3339 date or time (2027-01-31 or "
            "2027-01-31T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime(TIME_FORMAT)


@dataclass(frozen=True, slots=True)
class TrustEntry:
    """One trusted key: its id (SHA-256 hex of the raw key), PEM and optional expiry.

    ``expires`` (event time format) is the first instant the key is no longer
    trusted; None: trusted until removed.
    """

    key_id: str
    public_key: str
    expires: str | None = None

    @property
    def raw(self) -> bytes:
        return _raw_key(self.public_key)

    def active(self, at: str) -> bool:
        """Trusted at ``at`` (event time format)."""
        return self.expires is None or at < self.expires

    @classmethod
    def of(cls, raw: bytes, expires: str | None = None) -> TrustEntry:
        pem = base64.encodebytes(_ED25519_SPKI + raw).decode("ascii")
        text = f"-----BEGIN PUBLIC KEY-----\n{pem}-----END PUBLIC KEY-----\n"
        return cls(hashlib.sha256(raw).hexdigest(), text, expires)

    @classmethod
    def from_json(cls, body: object) -> TrustEntry:
        """``{"public_key": PEM or base64 raw, "key_id"?: hex, "expires"?: RFC 3339 | null}``;
        a ``key_id`` that is not the key's own is refused."""
        if not isinstance(body, Mapping):
            raise InvalidInput("a trusted key is an object with a public_key")
        unknown = set(body) - {"key_id", "public_key", "expires"}
        if unknown:
            raise InvalidInput(f"unknown trusted key field(s): {', '.join(sorted(unknown))}")
        text, expires, given = body.get("public_key"), body.get("expires"), body.get("key_id")
        if not isinstance(text, str):
            raise InvalidInput("a trusted key needs public_key (PEM, or base64 of 32 bytes)")
        if expires is not None and not isinstance(expires, str):
            raise InvalidInput("expires is an RFC 3339 time or null")
        entry = cls.of(_raw_key(text), None if expires is None else parse_expiry(expires))
        if given is not None and (not isinstance(given, str) or given != entry.key_id):
            raise InvalidInput(
                f"key_id {str(given)[:70]!r} is not the id of that public key ({entry.key_id})"
            )
        return entry

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "public_key": self.public_key, "expires": self.expires}
