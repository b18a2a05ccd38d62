"""Checkpoints as C2SP signed notes: round trips, strict parsing, key rotation, and a
verification written from the specifications alone (not our verifier)."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.errors import InvalidCheckpoint, InvalidKey, SignatureInvalid
from artifactstore.model.tlog import Checkpoint
from artifactstore.provenance import keys, verify_checkpoint
from artifactstore.provenance.checkpoint import (
    parse_checkpoint,
    parse_vkey,
    sign_checkpoint,
    vkey,
)

ROOT = hashlib.sha256(b"root").digest()
CP = Checkpoint("example.org/log", 1234, ROOT)


def spec_verify(note: str, name: str, raw_public: bytes) -> tuple[str, int, bytes]:
    """C2SP signed-note and tlog-checkpoint, from the documents: split at the last blank
    line, find the line whose name and key hash match, Ed25519 over the text."""
    text, _, sigs = note.rpartition("\n\n")
    text += "\n"
    key_hash = hashlib.sha256(name.encode() + b"\n\x01" + raw_public).digest()[:4]
    for line in sigs.splitlines():
        dash_name, blob = line.rsplit(" ", 1)
        decoded = base64.b64decode(blob)
        if dash_name == "\u2014 " + name and decoded[:4] == key_hash:
            Ed25519PublicKey.from_public_bytes(raw_public).verify(decoded[4:], text.encode())
            origin, size, root = text.splitlines()[:3]
            return origin, int(size), base64.b64decode(root)
    raise AssertionError("no signature line by this key")


def test_round_trip_and_the_format_by_the_specs() -> None:
    key = keys.generate()
    note = sign_checkpoint(CP, key)
    lines = note.split("\n")
    assert lines[:4] == ["example.org/log", "1234", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith("\u2014 example.org/log ") and lines[5] == ""
    assert len(base64.b64decode(lines[4].split()[-1])) == 4 + 64
    assert verify_checkpoint(note, key.public) == CP
    assert spec_verify(note, "example.org/log", key.public.raw) == ("example.org/log", 1234, ROOT)


def test_an_altered_note_fails_its_signature() -> None:
    key = keys.generate()
    note = sign_checkpoint(CP, key)
    forged = note.replace("1234", "1233", 1)
    with pytest.raises(SignatureInvalid, match="altered"):
        verify_checkpoint(forged, key.public)
    with pytest.raises(InvalidSignature):
        spec_verify(forged, "example.org/log", key.public.raw)
    other_root = note.replace(base64.b64encode(ROOT).decode(), base64.b64encode(bytes(32)).decode())
    with pytest.raises(SignatureInvalid):
        verify_checkpoint(other_root, key.public)


def test_a_note_by_another_key_names_the_keys() -> None:
    note = sign_checkpoint(CP, keys.generate())
    with pytest.raises(SignatureInvalid, match="no signature by the key"):
        verify_checkpoint(note, keys.generate().public)


def test_key_rotation_keeps_old_checkpoints_verifiable() -> None:
    old_key, new_key = keys.generate(), keys.generate()
    old_note = sign_checkpoint(CP, old_key)
    new_note = sign_checkpoint(Checkpoint(CP.origin, 2000, ROOT), new_key)
    assert verify_checkpoint(old_note, [new_key.public, old_key.public]).size == 1234
    assert verify_checkpoint(new_note, [new_key.public, old_key.public]).size == 2000
    with pytest.raises(SignatureInvalid):
        verify_checkpoint(old_note, new_key.public)
    # a note cosigned by both verifies with either
    cosigned = old_note + sign_checkpoint(CP, new_key).rpartition("\n\n")[2]
    assert verify_checkpoint(cosigned, new_key.public) == CP
    assert verify_checkpoint(cosigned, old_key.public) == CP


def test_verifier_keys_round_trip() -> None:
    key = keys.generate().public
    text = vkey("example.org/log", key)
    name, parsed = parse_vkey(text)
    assert name == "example.org/log" and parsed.raw == key.raw
    wrong_hash = text.split("+")
    wrong_hash[1] = "00000000"
    with pytest.raises(InvalidKey, match="key hash"):
        parse_vkey("+".join(wrong_hash))
    with pytest.raises(InvalidKey):
        parse_vkey("nonsense")


GOOD = sign_checkpoint(CP, keys.generate())
MALFORMED = {
    "no final newline": GOOD.rstrip("\n"),
    "no blank line": GOOD.replace("\n\n", "\n"),
    "no signature": GOOD.rpartition("\n\n")[0] + "\n\n",
    "control character": GOOD.replace("1234", "12\r34"),
    "leading zero": GOOD.replace("\n1234\n", "\n01234\n"),
    "negative size": GOOD.replace("\n1234\n", "\n-1234\n"),
    "huge size": GOOD.replace("\n1234\n", "\n" + "9" * 30 + "\n"),
    "short root": GOOD.replace(base64.b64encode(ROOT).decode(), base64.b64encode(b"x").decode()),
    "non-base64 root": GOOD.replace(base64.b64encode(ROOT).decode(), "*" * 44),
    "empty origin": "\n" + GOOD.split("\n", 1)[1],
    "spaced origin": "a b" + GOOD[len("example.org/log") :],
    "two lines": "example.org/log\n1234\n\n" + GOOD.rpartition("\n\n")[2],
    "plain dash": GOOD.replace("\u2014", "-"),
    "signature not base64": GOOD.rpartition(" ")[0] + " !!!!\n",
    "signature too short": GOOD.rpartition(" ")[0] + " AAAA\n",
    "empty extension": GOOD.replace("\n\n", "\n\n\n", 1).replace("\n\n\n", "\n\n", 0),
    "too long": GOOD + ("\u2014 x " + "A" * 100 + "\n") * 1000,
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_notes_are_refused_clearly(case: str) -> None:
    note = MALFORMED[case]
    if note == GOOD:
        pytest.skip("the case did not change the note")
    with pytest.raises((InvalidCheckpoint, SignatureInvalid)) as info:
        verify_checkpoint(note, keys.generate().public)
    assert info.value.detail


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parsing_arbitrary_text_raises_only_invalid_checkpoint(text: str) -> None:
    try:
        checkpoint, signatures = parse_checkpoint(text)
    except InvalidCheckpoint:
        return
    assert checkpoint.origin and signatures


@settings(max_examples=100, deadline=None)
@given(
    origin=st.from_regex(r"[a-z0-9./-]{1,40}", fullmatch=True),
    size=st.integers(0, 2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
)
def test_every_checkpoint_round_trips(origin: str, size: int, root: bytes) -> None:
    key = KEY
    cp = Checkpoint(origin, size, root)
    note = sign_checkpoint(cp, key)
    assert verify_checkpoint(note, key.public) == cp
    assert spec_verify(note, origin, key.public.raw) == (origin, size, root)


KEY = keys.generate()


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path, _ = keys.write_key_pair(keys.generate(), tmp_path / "log.key")
    os.chmod(path, 0o644)
    with pytest.raises(InvalidKey, match="chmod 600"):
        keys.load_private_key(path)
