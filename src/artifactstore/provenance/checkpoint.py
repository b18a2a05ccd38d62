"""Checkpoints: C2SP ``tlog-checkpoint`` bodies in C2SP signed notes, Ed25519.

A checkpoint as served and saved (docs/provenance.md, "Transparency log")::

    <origin>\\n
    <tree size, decimal>\\n
    <root hash, base64>\\n
    \\n
    — <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>\\n

The signature covers the body (the first three lines, newlines included).
The key name is the origin; the key hash is ``provenance.keys.note_key_hash``.
A verifier picks the signature lines whose name and key hash match the key
it holds and ignores the others, so a note may carry signatures by several
keys and an old checkpoint keeps verifying with the old key after the log
key is rotated.

Parsing is strict (:class:`~artifactstore.errors.InvalidCheckpoint`, naming
what is wrong); a note that parses but whose signature fails is
:class:`~artifactstore.errors.SignatureInvalid`. Nothing here touches a file
or the network.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from artifactstore.errors import InvalidCheckpoint, InvalidKey, SignatureInvalid
from artifactstore.model.tlog import Checkpoint, b64
from artifactstore.provenance.keys import (
    ED25519_NOTE_TYPE,
    PrivateKey,
    PublicKey,
    note_key_hash,
)

__all__ = [
    "MAX_NOTE_BYTES",
    "NoteSignature",
    "format_body",
    "parse_checkpoint",
    "parse_vkey",
    "sign_checkpoint",
    "verify_checkpoint",
    "vkey",
]

#: The longest note accepted: a checkpoint is a few hundred bytes.
MAX_NOTE_BYTES = 64 * 1024
#: At most this many signature lines (C2SP lets verifiers bound them).
MAX_SIGNATURES = 100
_DASH = "\u2014 "
_MAX_SIZE = 2**63 - 1


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the signer's name, its 4-byte key hash and the signature."""

    name: str
    key_hash: bytes
    signature: bytes


def format_body(checkpoint: Checkpoint) -> str:
    """The ``tlog-checkpoint`` text: origin, size, root, extension lines, each ending in \\n."""
    lines = [checkpoint.origin, str(checkpoint.size), b64(checkpoint.root), *checkpoint.extensions]
    return "".join(line + "\n" for line in lines)


def vkey(name: str, key: PublicKey) -> str:
    """The C2SP verifier key: ``<name>+<hex key hash>+<base64(0x01 || public key)>``."""
    return f"{name}+{note_key_hash(name, key.raw).hex()}+{b64(ED25519_NOTE_TYPE + key.raw)}"


def parse_vkey(text: str) -> tuple[str, PublicKey]:
    """A C2SP verifier key's name and Ed25519 key; InvalidKey when it does not add up."""
    name, _, rest = text.strip().partition("+")
    hash_hex, _, key_b64 = rest.partition("+")
    try:
        raw = base64.b64decode(key_b64, validate=True)
        expected = bytes.fromhex(hash_hex)
    except (binascii.Error, ValueError):
        raise InvalidKey("not a verifier key: <name>+<hex key hash>+<base64 key>") from None
    if not name or len(raw) != 33 or raw[:1] != ED25519_NOTE_TYPE:
        raise InvalidKey("not an Ed25519 verifier key (<name>+<hash>+<base64(0x01 || key)>)")
    key = PublicKey(Ed25519PublicKey.from_public_bytes(raw[1:]))
    if note_key_hash(name, key.raw) != expected:
        raise InvalidKey(f"verifier key {name}: its key hash does not match its key")
    return name, key


def sign_checkpoint(checkpoint: Checkpoint, key: PrivateKey, name: str | None = None) -> str:
    """The signed note of ``checkpoint``, signed by ``key`` as ``name`` (default the origin)."""
    _check_origin(checkpoint.origin)
    body = format_body(checkpoint)
    signer = name or checkpoint.origin
    blob = note_key_hash(signer, key.public.raw) + key.sign(body.encode())
    return f"{body}\n{_DASH}{signer} {b64(blob)}\n"


def _check_origin(origin: str) -> None:
    if not origin or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in origin):
        raise InvalidCheckpoint(
            f"log origin {origin[:60]!r} must be non-empty, with no space, + or control character"
        )


def _split(note: str) -> tuple[str, list[str]]:
    if len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise InvalidCheckpoint(f"a checkpoint note is at most {MAX_NOTE_BYTES} bytes")
    bad = [c for c in note if (ord(c) < 0x20 and c != "\n") or 0xD800 <= ord(c) <= 0xDFFF]
    if bad:
        raise InvalidCheckpoint(
            f"the note holds a control character {bad[0]!r} (only \\n separates lines)"
        )
    if not note.endswith("\n"):
        raise InvalidCheckpoint("the note does not end with a newline")
    at = note.rfind("\n\n")
    if at < 0:
        raise InvalidCheckpoint("the note has no blank line between its text and signatures")
    body, signatures = note[: at + 1], note[at + 2 :].split("\n")[:-1]
    if not signatures:
        raise InvalidCheckpoint("the note carries no signature line")
    return body, signatures


def _signature(line: str) -> NoteSignature:
    if not line.startswith(_DASH):
        raise InvalidCheckpoint(f"signature line {line[:60]!r} does not start with '\u2014 '")
    name, sep, blob_text = line[len(_DASH) :].partition(" ")
    if not sep or not name or " " in blob_text or "+" in name:
        raise InvalidCheckpoint(f"signature line {line[:60]!r} is not '\u2014 <name> <base64>'")
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCheckpoint(f"signature line of {name[:40]!r} is not base64") from None
    if len(blob) < 5:
        raise InvalidCheckpoint(f"signature line of {name[:40]!r} is too short")
    return NoteSignature(name, blob[:4], blob[4:])


def _body(body: str) -> Checkpoint:
    lines = body.split("\n")[:-1]  # the body ends in \n
    if len(lines) < 3:
        raise InvalidCheckpoint("a checkpoint has an origin, a tree size and a root hash line")
    origin, size_text, root_text, *extensions = lines
    _check_origin(origin)
    if not (size_text.isascii() and size_text.isdigit()) or (
        size_text != "0" and size_text.startswith("0")
    ):
        raise InvalidCheckpoint(f"tree size {size_text[:40]!r} is not a decimal number")
    if len(size_text) > 19 or int(size_text) > _MAX_SIZE:
        raise InvalidCheckpoint(f"tree size {size_text[:40]} is too large")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCheckpoint(f"root hash {root_text[:60]!r} is not base64") from None
    if len(root) != 32 or b64(root) != root_text:
        raise InvalidCheckpoint(f"root hash {root_text[:60]!r} is not a base64 SHA-256 hash")
    if any(not line for line in extensions):
        raise InvalidCheckpoint("a checkpoint's extension lines must not be empty")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def parse_checkpoint(note: str) -> tuple[Checkpoint, list[NoteSignature]]:
    """The checkpoint and signature lines of a note, signatures unchecked."""
    body, lines = _split(note)
    if len(lines) > MAX_SIGNATURES:
        raise InvalidCheckpoint(f"a note carries at most {MAX_SIGNATURES} signatures")
    signatures = [_signature(line) for line in lines]
    return _body(body), signatures


def verify_checkpoint(
    note: str,
    keys: PublicKey | Sequence[PublicKey | tuple[str, PublicKey]],
    name: str | None = None,
) -> Checkpoint:
    """The checkpoint of ``note`` once a signature by one of ``keys`` verifies.

    A key is a :class:`PublicKey`, whose signature line must carry ``name``
    (default the note's origin), or a ``(name, key)`` pair (a C2SP verifier
    key's). Raises InvalidCheckpoint for a malformed note; SignatureInvalid
    when a signature line by a held key does not verify (the body was
    changed) or when no line is by a held key.
    """
    held = [keys] if isinstance(keys, PublicKey) else list(keys)
    checkpoint, signatures = parse_checkpoint(note)
    body = format_body(checkpoint).encode()
    wanted: list[str] = []
    for item in held:
        signer, key = item if isinstance(item, tuple) else (name or checkpoint.origin, item)
        key_hash = note_key_hash(signer, key.raw)
        wanted.append(f"{signer}+{key_hash.hex()}")
        for sig in signatures:
            if sig.name != signer or sig.key_hash != key_hash:
                continue
            if key.verify(sig.signature, body):
                return checkpoint
            raise SignatureInvalid(
                f"the checkpoint's signature by key {signer}+{key_hash.hex()} does not "
                "verify: the note was altered after signing"
            )
    present = ", ".join(f"{s.name}+{s.key_hash.hex()}" for s in signatures)
    raise SignatureInvalid(
        f"the checkpoint carries no signature by the key(s) held ({', '.join(wanted)}); "
        f"it is signed by {present}"
    )
