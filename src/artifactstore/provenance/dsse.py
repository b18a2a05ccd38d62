"""Signing a package into a DSSE envelope and verifying one, offline.

Everything an auditor needs is here and in ``model/envelope.py``: public
keys, the envelope and the manifest's canonical CBOR bytes. No database, no
server (docs/provenance.md, "Signatures").

Verification raises :class:`SignatureInvalid` naming the first cause found,
in this order: the envelope (JSON, base64, ``payloadType``), the statement
(in-toto v1, our ``predicateType``), the subject (this package's reference
and both digests), then the signatures. Or it returns a
:class:`SignatureReport`: which of the given keys signed. A signature whose
``keyid`` no given key has is tried with every given key anyway: DSSE's
``keyid`` is an unauthenticated hint, never a security decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import blake3

from artifactstore.errors import SignatureInvalid
from artifactstore.model.envelope import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    Envelope,
    Signature,
    Signer,
    pae,
    parse_statement,
    statement,
)
from artifactstore.model.manifest import Manifest

if TYPE_CHECKING:  # no crypto library until a key is loaded
    from artifactstore.provenance.keys import PublicKey

__all__ = [
    "PackageRef",
    "SignatureReport",
    "check_binding",
    "package_of",
    "sign_package",
    "verify_envelope",
    "verify_manifest",
]


@dataclass(frozen=True, slots=True)
class PackageRef:
    """What a signature is over: ``NS/NAME:VERSION`` and its manifest's digests (hex)."""

    reference: str
    blake3: str
    sha256: str

    @classmethod
    def of(cls, manifest: Manifest) -> PackageRef:
        digests = manifest.digests()
        reference = f"{manifest.namespace}/{manifest.name}:{manifest.version}"
        return cls(reference, digests.blake3.hex, digests.sha256.hex)


@dataclass(frozen=True, slots=True)
class SignatureReport:
    """The key ids (of the keys given) whose signatures verified, in the envelope's order."""

    package: PackageRef
    signed_by: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"reference": self.package.reference, "signed_by": list(self.signed_by)}


def package_of(manifest_cbor: bytes) -> PackageRef:
    """The package a manifest's canonical bytes are: parsed (so the reference is the
    manifest's own) and hashed as they are."""
    manifest = Manifest.from_cbor(manifest_cbor)
    return PackageRef(
        f"{manifest.namespace}/{manifest.name}:{manifest.version}",
        blake3.blake3(manifest_cbor).hexdigest(),
        hashlib.sha256(manifest_cbor).hexdigest(),
    )


def sign_package(package: PackageRef, key: Signer) -> Envelope:
    """A one-signature envelope over ``package``'s statement (deterministic: Ed25519)."""
    body = statement(package.reference, package.blake3, package.sha256)
    sig = key.sign(pae(PAYLOAD_TYPE, body))
    return Envelope(PAYLOAD_TYPE, body, (Signature(key.key_id, sig),))


def check_binding(envelope: Envelope, package: PackageRef) -> None:
    """The envelope carries our statement about exactly ``package`` (no key needed).

    Every digest the subject names for blake3 or sha256 must equal the
    package's, and it must name at least one of them.
    """
    if envelope.payload_type != PAYLOAD_TYPE:
        raise SignatureInvalid(
            f"wrong payloadType {envelope.payload_type[:100]!r}: expected {PAYLOAD_TYPE!r}"
        )
    predicate_type, subjects = parse_statement(envelope.payload)
    if predicate_type != PREDICATE_TYPE:
        raise SignatureInvalid(
            f"wrong predicateType {predicate_type[:200]!r}: expected {PREDICATE_TYPE!r}"
        )
    ours = {"blake3": package.blake3, "sha256": package.sha256}
    for subject in subjects:
        if subject.name != package.reference:
            continue
        named = {k: v for k, v in subject.digests.items() if k in ours}
        if named and all(ours[k] == v for k, v in named.items()):
            return
        raise SignatureInvalid(
            f"subject mismatch: the statement's digests of {package.reference} are not its "
            f"manifest's (blake3:{package.blake3})"
        )
    names = ", ".join(repr(s.name[:200]) for s in subjects[:3])
    raise SignatureInvalid(
        f"subject mismatch: the statement is about {names}, not {package.reference}"
    )


def _signers(envelope: Envelope, keys: Sequence[PublicKey]) -> tuple[list[str], list[str]]:
    """(ids of the keys that verified a signature, keyids of signatures none of them verified)."""
    message = pae(envelope.payload_type, envelope.payload)
    signed: list[str] = []
    failed: list[str] = []
    for sig in envelope.signatures:
        # The hinted key first; then every other, as the keyid is not authenticated.
        ordered = sorted(keys, key=lambda k: k.id != sig.keyid)
        match = next((k.id for k in ordered if k.verify(sig.sig, message)), None)
        if match is None:
            failed.append(sig.keyid)
        elif match not in signed:
            signed.append(match)
    return signed, failed


def verify_envelope(
    envelope: Envelope, package: PackageRef, keys: Iterable[PublicKey]
) -> SignatureReport:
    """Verify the binding, then that at least one of ``keys`` signed; which ones did.

    SignatureInvalid names the cause: a bad binding (see :func:`check_binding`),
    "bad signature" when a signature names one of ``keys`` but does not
    verify, "unknown key" when no signature is by any of them.
    """
    check_binding(envelope, package)
    given = list(keys)
    signed, failed = _signers(envelope, given)
    if signed:
        return SignatureReport(package, tuple(signed))
    ids = {k.id for k in given}
    hinted = [kid for kid in failed if kid in ids]
    if hinted:
        raise SignatureInvalid(
            f"bad signature: the signature by key {hinted[0][:16]}... does not verify over "
            f"{package.reference}"
        )
    shown = ", ".join(f"{k[:16]}..." if k else "(no keyid)" for k in failed[:3])
    raise SignatureInvalid(
        f"unknown key: no signature over {package.reference} is by the key(s) given "
        f"(signed by {shown})"
    )


def verify_manifest(
    envelope: Envelope, manifest_cbor: bytes, keys: Iterable[PublicKey]
) -> SignatureReport:
    """Offline verification from the manifest's bytes alone (the library's entry point)."""
    return verify_envelope(envelope, package_of(manifest_cbor), keys)
