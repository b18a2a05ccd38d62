"""Signing and verifying packages offline: round trips, every tampering refused naming its cause,
and our envelopes checked by a verifier written here from the DSSE and in-toto specs alone."""

from __future__ import annotations

import base64
import hashlib
import json

import blake3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from artifactstore.errors import SignatureInvalid
from artifactstore.model.envelope import Envelope, Signature
from artifactstore.model.identity import Digest, Namespace, PackageName, Version
from artifactstore.model.manifest import FileEntry, Manifest
from artifactstore.model.paths import PackagePath
from artifactstore.provenance.dsse import (
    PackageRef,
    package_of,
    sign_package,
    verify_envelope,
    verify_manifest,
)
from artifactstore.provenance.keys import PrivateKey, generate


def _manifest(version: str = "1", content: bytes = b"hello") -> Manifest:
    b3 = Digest.parse("blake3:" + blake3.blake3(content).hexdigest())
    sha = Digest.parse("sha256:" + hashlib.sha256(content).hexdigest())
    entry = FileEntry(PackagePath("a.txt"), len(content), "text/plain", b3, sha)
    return Manifest.build(
        Namespace("ci"),
        PackageName("app"),
        Version(version),
        [entry],
        created="2026-01-01T00:00:00Z",
        producer="tests",
    )


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate()


def test_a_signed_manifest_verifies_offline(key: PrivateKey) -> None:
    manifest = _manifest()
    envelope = sign_package(PackageRef.of(manifest), key)
    report = verify_manifest(envelope, manifest.to_cbor(), [generate().public, key.public])
    assert report.signed_by == (key.key_id,)
    assert report.package == package_of(manifest.to_cbor()) == PackageRef.of(manifest)
    assert envelope.signatures[0].keyid == key.key_id == key.public.id
    assert sign_package(PackageRef.of(manifest), key) == envelope  # deterministic


def _reencoded(envelope: Envelope, **changes: object) -> Envelope:
    body = envelope.to_json()
    body.update(changes)
    return Envelope.from_json(body)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_a_flipped_bit_in_the_signature_is_a_bad_signature(key: PrivateKey) -> None:
    manifest = _manifest()
    envelope = sign_package(PackageRef.of(manifest), key)
    sig = envelope.signatures[0]
    bad = Envelope(
        envelope.payload_type, envelope.payload, (Signature(sig.keyid, _flip(sig.sig, 5)),)
    )
    with pytest.raises(SignatureInvalid, match="bad signature"):
        verify_manifest(bad, manifest.to_cbor(), [key.public])


def test_a_flipped_bit_in_the_payload_is_refused(key: PrivateKey) -> None:
    manifest = _manifest()
    envelope = sign_package(PackageRef.of(manifest), key)
    # A digit of the blake3 hex in the subject: still JSON, now about other bytes.
    at = envelope.payload.index(PackageRef.of(manifest).blake3.encode()) + 3
    tampered = Envelope(envelope.payload_type, _flip(envelope.payload, at), envelope.signatures)
    with pytest.raises(SignatureInvalid, match="subject mismatch"):
        verify_manifest(tampered, manifest.to_cbor(), [key.public])
    # A byte of the predicate: the subject holds, the signature does not.
    at = envelope.payload.index(b"artifactstore.manifest.v1")
    tampered = Envelope(envelope.payload_type, _flip(envelope.payload, at), envelope.signatures)
    with pytest.raises(SignatureInvalid, match="bad signature"):
        verify_manifest(tampered, manifest.to_cbor(), [key.public])


def test_a_flipped_bit_in_the_manifest_is_a_subject_mismatch(key: PrivateKey) -> None:
    manifest = _manifest()
    envelope = sign_package(PackageRef.of(manifest), key)
    other = _manifest(content=b"hellp")  # one bit of one file's bytes
    with pytest.raises(SignatureInvalid, match="subject mismatch"):
        verify_manifest(envelope, other.to_cbor(), [key.public])
    with pytest.raises(SignatureInvalid, match="subject mismatch"):
        verify_manifest(envelope, _manifest(version="2").to_cbor(), [key.public])


def test_an_untrusted_key_and_wrong_types_are_named(key: PrivateKey) -> None:
    manifest = _manifest()
    envelope = sign_package(PackageRef.of(manifest), key)
    with pytest.raises(SignatureInvalid, match="unknown key"):
        verify_manifest(envelope, manifest.to_cbor(), [generate().public])
    with pytest.raises(SignatureInvalid, match="wrong payloadType"):
        verify_manifest(_reencoded(envelope, payloadType="text/plain"), manifest.to_cbor(), [])
    statement = json.loads(envelope.payload)
    statement["predicateType"] = "https://slsa.dev/provenance/v1"
    other = Envelope(envelope.payload_type, json.dumps(statement).encode(), envelope.signatures)
    with pytest.raises(SignatureInvalid, match="wrong predicateType"):
        verify_manifest(other, manifest.to_cbor(), [key.public])


def test_a_subject_with_only_sha256_binds_and_a_wrong_one_does_not(key: PrivateKey) -> None:
    package = PackageRef.of(_manifest())
    statement = json.loads(sign_package(package, key).payload)
    statement["subject"][0]["digest"] = {"sha256": package.sha256}
    body = json.dumps(statement).encode()
    from artifactstore.model.envelope import PAYLOAD_TYPE, pae

    signed = Envelope(PAYLOAD_TYPE, body, (Signature("", key.sign(pae(PAYLOAD_TYPE, body))),))
    assert verify_envelope(signed, package, [key.public]).signed_by == (key.key_id,)
    statement["subject"][0]["digest"] = {"md5": "00"}
    body = json.dumps(statement).encode()
    unbound = Envelope(PAYLOAD_TYPE, body, (Signature("", key.sign(pae(PAYLOAD_TYPE, body))),))
    with pytest.raises(SignatureInvalid, match="subject mismatch"):
        verify_envelope(unbound, package, [key.public])


def test_several_signers_are_each_reported(key: PrivateKey) -> None:
    other = generate()
    package = PackageRef.of(_manifest())
    both = sign_package(package, key).with_signature(sign_package(package, other).signatures[0])
    assert verify_envelope(both, package, [other.public, key.public]).signed_by == (
        key.key_id,
        other.key_id,
    )
    # keyid is a hint: a signature whose keyid is wrong still verifies by its key.
    hinted = Envelope(both.payload_type, both.payload, (Signature("nope", both.signatures[1].sig),))
    assert verify_envelope(hinted, package, [other.public]).signed_by == (other.key_id,)


# --- an independent verifier, from the specifications alone -------------------------------------


def _spec_verify(envelope_json: str, manifest_cbor: bytes, raw_public_key: bytes) -> bool:
    """DSSE protocol.md + envelope.md and in-toto Statement v1, with none of our code."""
    env = json.loads(envelope_json)
    if env["payloadType"] != "application/vnd.in-toto+json":
        return False
    body = base64.b64decode(env["payload"])
    kind = env["payloadType"].encode()
    message = b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" "
    message += str(len(body)).encode() + b" " + body
    key = Ed25519PublicKey.from_public_bytes(raw_public_key)
    signed = False
    for sig in env["signatures"]:
        try:
            key.verify(base64.b64decode(sig["sig"]), message)
            signed = True
        except Exception:
            continue
    statement = json.loads(body)
    want = {
        "blake3": blake3.blake3(manifest_cbor).hexdigest(),
        "sha256": hashlib.sha256(manifest_cbor).hexdigest(),
    }
    bound = statement["_type"] == "https://in-toto.io/Statement/v1" and any(
        s["name"] == "ci/app:1" and s["digest"] == want for s in statement["subject"]
    )
    return signed and bound


def test_our_envelopes_verify_by_the_specifications_alone(key: PrivateKey) -> None:
    manifest = _manifest()
    envelope = sign_package(PackageRef.of(manifest), key)
    raw = key.public.key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert hashlib.sha256(raw).hexdigest() == envelope.signatures[0].keyid
    text = json.dumps(envelope.to_json())
    assert _spec_verify(text, manifest.to_cbor(), raw)
    assert not _spec_verify(text, _manifest(content=b"other").to_cbor(), raw)
    assert not _spec_verify(text, manifest.to_cbor(), generate().public.raw)
    flipped = envelope.to_json()
    sig = base64.b64decode(flipped["signatures"][0]["sig"])
    flipped["signatures"][0]["sig"] = base64.b64encode(_flip(sig, 0)).decode()
    assert not _spec_verify(json.dumps(flipped), manifest.to_cbor(), raw)
