"""DSSE envelopes and in-toto statements as values (docs/provenance.md, "Signatures").

Pure: bytes and JSON in, values out; no keys and no cryptography here (that
is ``provenance/dsse.py``), so that the event log, the HTTP client and the
CLI can carry envelopes without loading a crypto library.

An envelope is the DSSE JSON envelope (secure-systems-lab/dsse ``envelope.md``)::

    {"payloadType": "application/vnd.in-toto+json",
     "payload": base64(statement),
     "signatures": [{"keyid": "...", "sig": base64(Ed25519(PAE(type, payload)))}]}

Each signature covers ``PAE(payloadType, payload)`` (:func:`pae`), never the
JSON around it. The payload is an in-toto Statement v1 whose one subject is
the package reference with the digests of the manifest's canonical CBOR
bytes (:func:`statement`). Parsing is strict and bounded: anything
malformed raises :class:`SignatureInvalid` naming the cause, never another
exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from artifactstore.errors import InvalidInput, LimitExceeded, SignatureInvalid
from artifactstore.model.jsonio import strict_json_loads

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_SIGNATURES",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "SIGNATURE_HEADER",
    "STATEMENT_TYPE",
    "Envelope",
    "Signature",
    "Signer",
    "Subject",
    "b64decode",
    "pae",
    "parse_signature_header",
    "parse_statement",
    "signature_header",
    "statement",
]

#: DSSE ``payloadType`` of an in-toto statement.
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: in-toto Statement v1 ``_type``.
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: Our predicate: "the signer vouches for this package version" (docs/provenance.md).
PREDICATE_TYPE = "https://artifactstore.dev/attestation/package/v1"
#: Largest envelope accepted (its JSON text); ours are under 1 KiB.
MAX_ENVELOPE_BYTES = 64 * 1024
#: Most signatures in one envelope.
MAX_SIGNATURES = 16
#: The request header in which an envelope travels with a commit (repeatable).
SIGNATURE_HEADER = "Artifactstore-Signature"
#: Largest keyid accepted (ours are 64 hex digits).
_MAX_KEYID = 256

_B64 = re.compile(r"^[A-Za-z0-9+/\-_]*={0,2}$")


class Signer(Protocol):
    """What signs an envelope: a private key that knows its key id (``provenance.keys``)."""

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a signature covers.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, LEN being the byte
    length in ASCII decimal, with no leading zeros.
    """
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


def b64decode(text: str, what: str) -> bytes:
    """Standard or URL-safe base64 (DSSE allows either), padding optional; strict otherwise."""
    if not _B64.match(text):
        raise SignatureInvalid(f"{what} is not base64")
    alphabet = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(alphabet + "=" * (-len(alphabet) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid(f"{what} is not base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class Signature:
    """One DSSE signature: ``keyid`` is an unauthenticated hint ("" when unset)."""

    keyid: str
    sig: bytes

    def to_json(self) -> dict[str, str]:
        return {"keyid": self.keyid, "sig": _b64(self.sig)}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A DSSE envelope. ``payload`` is the raw serialized body (the statement's bytes)."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, Any]:
        """The DSSE JSON envelope (standard base64), what the API serves and the log holds."""
        return {
            "payloadType": self.payload_type,
            "payload": _b64(self.payload),
            "signatures": [s.to_json() for s in self.signatures],
        }

    def canonical(self) -> str:
        """Sorted-key compact JSON of :meth:`to_json`: how two copies compare."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """SHA-256 hex of :meth:`canonical`: the same envelope sent again is the same one."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(s.keyid for s in self.signatures)

    def with_signature(self, signature: Signature) -> Envelope:
        return Envelope(self.payload_type, self.payload, (*self.signatures, signature))

    @classmethod
    def from_json(cls, body: object) -> Envelope:
        """Parse a JSON envelope; unknown fields are ignored (DSSE's parsing rules)."""
        if not isinstance(body, Mapping):
            raise SignatureInvalid("an envelope is a JSON object")
        payload_type, payload, sigs = (
            body.get("payloadType"),
            body.get("payload"),
            body.get("signatures"),
        )
        if not isinstance(payload_type, str):
            raise SignatureInvalid("the envelope has no payloadType string")
        if not isinstance(payload, str):
            raise SignatureInvalid("the envelope has no payload string")
        if not isinstance(sigs, list) or not sigs:
            raise SignatureInvalid("the envelope has no signatures")
        if len(sigs) > MAX_SIGNATURES:
            raise SignatureInvalid(f"the envelope has more than {MAX_SIGNATURES} signatures")
        signatures = []
        for i, s in enumerate(sigs):
            if not isinstance(s, Mapping) or not isinstance(s.get("sig"), str):
                raise SignatureInvalid(f"signature {i} has no sig string")
            keyid = s.get("keyid") or ""  # unset is the same as set-but-empty
            if not isinstance(keyid, str) or len(keyid) > _MAX_KEYID:
                raise SignatureInvalid(f"signature {i} has a malformed keyid")
            signatures.append(Signature(keyid, b64decode(s["sig"], f"signature {i}'s sig")))
        return cls(payload_type, b64decode(payload, "the payload"), tuple(signatures))

    @classmethod
    def parse(cls, data: bytes | str) -> Envelope:
        """An envelope from its JSON text: at most :data:`MAX_ENVELOPE_BYTES`, strict JSON."""
        if len(data) > MAX_ENVELOPE_BYTES:
            raise LimitExceeded(
                f"an envelope of {len(data)} bytes is over the limit of {MAX_ENVELOPE_BYTES}"
            )
        try:
            body = strict_json_loads(data, max_depth=8, error=InvalidInput)
        except InvalidInput as exc:
            raise SignatureInvalid(f"the envelope is not valid JSON: {exc.detail}") from None
        return cls.from_json(body)


@dataclass(frozen=True, slots=True)
class Subject:
    """What a statement names: ``NS/NAME:VERSION`` and the manifest digests (lowercase hex)."""

    name: str
    digests: Mapping[str, str]


def statement(reference: str, blake3_hex: str, sha256_hex: str) -> bytes:
    """The in-toto Statement v1 over a package: the payload our envelopes carry.

    Compact JSON with sorted keys, so that signing one package twice with one
    key gives the same envelope (Ed25519 is deterministic), which the store
    records once.
    """
    namespace, _, rest = reference.partition("/")
    name, _, version = rest.partition(":")
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": reference, "digest": {"blake3": blake3_hex, "sha256": sha256_hex}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "package": {"namespace": namespace, "name": name, "version": version},
            "manifest": {
                "schema": "artifactstore.manifest.v1",
                "encoding": "application/cbor (RFC 8949 section 4.2 deterministic)",
            },
        },
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def parse_statement(payload: bytes) -> tuple[str, list[Subject]]:
    """(predicateType, subjects) of an in-toto Statement v1; SignatureInvalid if it is not one."""
    try:
        body = strict_json_loads(payload, max_depth=16, error=InvalidInput)
    except InvalidInput as exc:
        raise SignatureInvalid(f"the payload is not an in-toto statement: {exc.detail}") from None
    if not isinstance(body, Mapping) or body.get("_type") != STATEMENT_TYPE:
        raise SignatureInvalid(f"the payload is not an in-toto Statement v1 ({STATEMENT_TYPE})")
    predicate_type, subjects = body.get("predicateType"), body.get("subject")
    if not isinstance(predicate_type, str):
        raise SignatureInvalid("the statement has no predicateType")
    if not isinstance(subjects, list) or not subjects:
        raise SignatureInvalid("the statement has no subject")
    out = []
    for s in subjects:
        if not isinstance(s, Mapping):
            raise SignatureInvalid("a statement subject is not an object")
        name, digests = s.get("name"), s.get("digest")
        if not isinstance(name, str) or not isinstance(digests, Mapping):
            raise SignatureInvalid("a statement subject has no name or digest")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in digests.items()):
            raise SignatureInvalid("a statement subject's digests are not strings")
        out.append(Subject(name, dict(digests)))
    return predicate_type, out


def signature_header(envelope: Envelope) -> str:
    """An envelope as an ``Artifactstore-Signature`` value: unpadded base64url of its
    canonical JSON (a header value cannot hold JSON's quotes and spaces safely)."""
    return base64.urlsafe_b64encode(envelope.canonical().encode()).decode("ascii").rstrip("=")


def parse_signature_header(value: str) -> Envelope:
    """The envelope of an ``Artifactstore-Signature`` value; SignatureInvalid if malformed."""
    if len(value) > MAX_ENVELOPE_BYTES * 4 // 3 + 4:
        raise LimitExceeded(f"an {SIGNATURE_HEADER} header is over {MAX_ENVELOPE_BYTES} bytes")
    return Envelope.parse(b64decode(value.strip(), f"the {SIGNATURE_HEADER} header"))
