"""Ed25519 key files and the identifiers derived from a public key.

Private keys are PEM PKCS#8, public keys PEM SubjectPublicKeyInfo (what
``openssl pkey`` reads and writes). A private key file that the group or
others may read is refused before it is parsed, as ``ssh`` refuses one: a key
that leaked through its mode bits must not go on signing silently. Nothing
here logs or echoes key material; errors name the file, never its content.

Two identifiers, for two formats:

* ``key_id`` (DSSE ``keyid``, trust entries): lowercase hex SHA-256 of the
  32 raw public key bytes. Stable across PEM re-encodings of the same key.
* ``note_key_hash`` (C2SP signed notes): the first 4 bytes of
  ``SHA-256(name || 0x0A || 0x01 || public key)``, 0x01 being the Ed25519
  signature type, as C2SP's signed-note spec defines it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from artifactstore.errors import InvalidKey

__all__ = [
    "PrivateKey",
    "PublicKey",
    "generate",
    "key_id",
    "load_private_key",
    "load_public_key",
    "note_key_hash",
    "public_key_from_pem",
    "public_key_from_raw",
    "write_key_pair",
]

#: C2SP signed-note signature type of Ed25519.
ED25519_NOTE_TYPE = b"\x01"


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key with its derived identifier."""

    key: Ed25519PublicKey

    @property
    def raw(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def id(self) -> str:
        return key_id(self.raw)

    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is this key's Ed25519 signature over ``message``."""
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class PrivateKey:
    """An Ed25519 private key. ``repr`` never shows the key."""

    key: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"PrivateKey(id={self.public.id[:16]}...)"

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    @property
    def key_id(self) -> str:
        """The public key's id: what a DSSE signature by this key names as its ``keyid``."""
        return self.public.id

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()


def note_key_hash(name: str, raw_public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_NOTE_TYPE + raw_public).digest()[:4]


def generate() -> PrivateKey:
    return PrivateKey(Ed25519PrivateKey.generate())


def write_key_pair(key: PrivateKey, out: Path) -> tuple[Path, Path]:
    """Write ``out`` (private, mode 0600 from its creation) and ``out`` with ``.pub``.

    Refuses to overwrite either file: a key replaced by mistake cannot be
    recovered, and every signature made with it would stop verifying.
    """
    public_path = out.with_suffix(".pub")
    if out.suffix == ".pub":
        raise InvalidKey(f"{out}: the private key file must not end in .pub")
    for path in (out, public_path):
        if path.exists():
            raise InvalidKey(f"{path} already exists; refusing to overwrite a key")
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.pem())
        public_path.write_bytes(key.public.pem())
    except OSError as exc:
        raise InvalidKey(f"cannot write the key pair at {out}: {exc.strerror}") from exc
    return out, public_path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidKey(f"cannot read key file {path}: {exc.strerror}") from exc


def load_private_key(path: Path) -> PrivateKey:
    """The Ed25519 private key in ``path``, refused if group or others may read it."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InvalidKey(f"cannot read key file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidKey(
            f"private key file {path} is accessible by others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"{path} is not an unencrypted PEM PKCS#8 private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidKey(f"{path} holds a {type(key).__name__}; only Ed25519 keys are supported")
    return PrivateKey(key)


def public_key_from_pem(data: bytes, source: str = "the public key") -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"{source} is not a PEM SubjectPublicKeyInfo public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidKey(f"{source} is a {type(key).__name__}; only Ed25519 keys are supported")
    return PublicKey(key)


def public_key_from_raw(raw: bytes) -> PublicKey:
    """A public key from its 32 raw bytes (a trust entry's key)."""
    try:
        return PublicKey(Ed25519PublicKey.from_public_bytes(raw))
    except ValueError as exc:
        raise InvalidKey("not the 32 raw bytes of an Ed25519 public key") from exc


def load_public_key(path: Path) -> PublicKey:
    return public_key_from_pem(_read(path), str(path))
