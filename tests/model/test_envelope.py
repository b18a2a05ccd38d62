"""DSSE envelopes, statements, the commit header and trust entries: pure encoders and parsers."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactstore.errors import InvalidInput, LimitExceeded, SignatureInvalid
from artifactstore.model.envelope import (
    MAX_ENVELOPE_BYTES,
    PAYLOAD_TYPE,
    Envelope,
    Signature,
    b64decode,
    pae,
    parse_signature_header,
    parse_statement,
    signature_header,
    statement,
)
from artifactstore.model.trust import TrustEntry, parse_expiry

envelopes = st.builds(
    Envelope,
    st.text(max_size=40),
    st.binary(max_size=200),
    st.lists(
        st.builds(Signature, st.text(max_size=64), st.binary(max_size=80)), min_size=1, max_size=4
    ).map(tuple),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


def test_pae_is_the_dsse_encoding() -> None:
    # The example of DSSE's protocol.md, written out by hand.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("é", b"\x00") == b"DSSEv1 2 \xc3\xa9 1 \x00"  # byte lengths, not characters


@given(envelopes)
def test_an_envelope_round_trips_through_json_and_the_header(envelope: Envelope) -> None:
    assert Envelope.from_json(envelope.to_json()) == envelope
    assert Envelope.parse(json.dumps(envelope.to_json())) == envelope
    assert parse_signature_header(signature_header(envelope)) == envelope
    header = signature_header(envelope)
    assert "=" not in header and all(c.isalnum() or c in "-_" for c in header)


@given(st.binary(max_size=100))
def test_base64_either_alphabet_with_or_without_padding(data: bytes) -> None:
    for text in (
        base64.b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
    ):
        assert b64decode(text, "x") == data


@given(st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode()))
def test_malformed_envelopes_never_crash(data: bytes) -> None:
    """Refused with our errors, or parsed to an envelope that its own JSON parses back to."""
    try:
        envelope = Envelope.parse(data)
    except (SignatureInvalid, LimitExceeded):
        return
    assert Envelope.parse(envelope.canonical()) == envelope


@given(json_values)
def test_malformed_statements_never_crash(value: object) -> None:
    """Refused with SignatureInvalid, or a statement whose parts are what the JSON held."""
    try:
        predicate_type, subjects = parse_statement(json.dumps(value).encode())
    except SignatureInvalid:
        return
    assert isinstance(value, dict) and value["predicateType"] == predicate_type
    assert [(s.name, s.digests) for s in subjects] == [
        (s["name"], s["digest"]) for s in value["subject"]
    ]


@given(st.text(max_size=300))
def test_malformed_headers_never_crash(value: str) -> None:
    """Refused with our errors, or an envelope that its own header value gives back."""
    try:
        envelope = parse_signature_header(value)
    except (SignatureInvalid, LimitExceeded):
        return
    assert parse_signature_header(signature_header(envelope)) == envelope


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        (b"{", "not valid JSON"),
        (b'{"a": 1, "a": 2}', "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"payload": "", "signatures": [{"sig": ""}]}', "payloadType"),
        (b'{"payloadType": "t", "payload": "!!", "signatures": [{"sig": ""}]}', "base64"),
        (b'{"payloadType": "t", "payload": "", "signatures": []}', "no signatures"),
        (b'{"payloadType": "t", "payload": "", "signatures": [{"keyid": "k"}]}', "sig"),
        (b'{"payloadType": "t", "payload": "", "signatures": [{"sig": "a", "keyid": 1}]}', "keyid"),
    ],
)
def test_a_malformed_envelope_names_its_fault(body: bytes, cause: str) -> None:
    with pytest.raises(SignatureInvalid, match=cause):
        Envelope.parse(body)


def test_a_huge_envelope_is_a_limit_not_a_parse() -> None:
    with pytest.raises(LimitExceeded):
        Envelope.parse(b" " * (MAX_ENVELOPE_BYTES + 1))
    with pytest.raises(LimitExceeded):
        parse_signature_header("A" * (MAX_ENVELOPE_BYTES * 2))


def test_unknown_fields_are_ignored_and_an_unset_keyid_is_empty() -> None:
    body = {"payloadType": "t", "payload": "", "signatures": [{"sig": ""}], "extra": [1]}
    assert Envelope.from_json(body).signatures == (Signature("", b""),)


def test_the_statement_is_an_in_toto_v1_statement_about_the_package() -> None:
    body = statement("ci/app:1.4.2", "a" * 64, "b" * 64)
    parsed = json.loads(body)
    assert parsed["_type"] == "https://in-toto.io/Statement/v1"
    assert parsed["subject"] == [
        {"name": "ci/app:1.4.2", "digest": {"blake3": "a" * 64, "sha256": "b" * 64}}
    ]
    assert parsed["predicate"]["package"] == {"namespace": "ci", "name": "app", "version": "1.4.2"}
    predicate_type, subjects = parse_statement(body)
    assert predicate_type == parsed["predicateType"]
    assert [(s.name, dict(s.digests)) for s in subjects] == [
        ("ci/app:1.4.2", {"blake3": "a" * 64, "sha256": "b" * 64})
    ]
    assert statement("ci/app:1.4.2", "a" * 64, "b" * 64) == body  # deterministic
    assert Envelope(PAYLOAD_TYPE, body, (Signature("k", b"s"),)).digest() == (
        Envelope(PAYLOAD_TYPE, body, (Signature("k", b"s"),)).digest()
    )


# --- trust entries ----------------------------------------------------------------------------

RAW = bytes(range(32))
PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    + base64.b64encode(bytes.fromhex("302a300506032b6570032100") + RAW).decode()
    + "\n-----END PUBLIC KEY-----\n"
)


def test_a_trust_entry_from_pem_or_raw_is_the_same_key() -> None:
    from_pem = TrustEntry.from_json({"public_key": PEM})
    from_raw = TrustEntry.from_json({"public_key": base64.b64encode(RAW).decode()})
    assert from_pem == from_raw
    assert from_pem.key_id == hashlib.sha256(RAW).hexdigest()
    assert from_pem.raw == RAW
    assert TrustEntry.from_json(from_pem.to_json()) == from_pem


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"public_key": 1},
        {"public_key": "not base64!"},
        {"public_key": base64.b64encode(b"short").decode()},
        {"public_key": PEM.replace("MCowBQYDK2VwAyEA", "MCowBQYDK2VxAyEA")},  # not Ed25519
        {"public_key": PEM, "key_id": "0" * 64},
        {"public_key": PEM, "expires": "tomorrow"},
        {"public_key": PEM, "expires": 5},
        {"public_key": PEM, "other": 1},
        "a string",
    ],
)
def test_bad_trust_entries_are_refused(body: object) -> None:
    with pytest.raises(InvalidInput):
        TrustEntry.from_json(body)


def test_expiry_is_normalised_to_utc_and_compared_as_event_times() -> None:
    assert parse_expiry("2027-01-31") == "2027-01-31T00:00:00.000000Z"
    assert parse_expiry("2027-01-31T02:00:00+02:00") == "2027-01-31T00:00:00.000000Z"
    entry = TrustEntry.from_json({"public_key": PEM, "expires": "2027-01-31"})
    assert entry.active("2027-01-30T23:59:59.999999Z")
    assert not entry.active("2027-01-31T00:00:00.000000Z")
    assert TrustEntry.from_json({"public_key": PEM}).active("9999-12-31T00:00:00.000000Z")


@given(json_values)
def test_trust_entries_never_crash(value: object) -> None:
    """Refused with InvalidInput, or an entry that its own JSON form parses back to."""
    try:
        entry = TrustEntry.from_json(value)
    except InvalidInput:
        return
    assert TrustEntry.from_json(entry.to_json()) == entry
