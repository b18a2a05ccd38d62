"""key generate, sign; and the signature half of ``verify REF --key`` (docs/provenance.md).

Private keys are read here and used here: a remote ``sign`` or ``push --sign``
signs on this machine and sends the envelope, never the key. Nothing prints
key material; messages name files and key ids only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import emit_json, note
from artifactstore.errors import DigestMismatch, SignatureInvalid
from artifactstore.model.api import StoreAPI
from artifactstore.model.clock import utc_now
from artifactstore.model.envelope import Envelope
from artifactstore.model.identity import Reference
from artifactstore.model.trust import TrustEntry
from artifactstore.provenance.dsse import PackageRef, verify_envelope
from artifactstore.provenance.keys import (
    PublicKey,
    generate,
    load_private_key,
    load_public_key,
    public_key_from_raw,
    write_key_pair,
)

__all__ = ["COMMANDS", "check_signatures"]

pass_ctx = click.make_pass_decorator(CliContext)
KEY_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group(name="key")
def key_group() -> None:
    """Signing keys (Ed25519)."""


@key_group.command(name="generate")
@click.option(
    "--out",
    required=True,
    type=KEY_FILE,
    help="Private key file (PEM PKCS#8, mode 0600); the public key goes beside it as .pub.",
)
def key_generate(out: Path) -> None:
    """Generate an Ed25519 key pair: OUT (private) and OUT with .pub (public)."""
    key = generate()
    private, public = write_key_pair(key, out)
    note(f"wrote {private} (private, mode 0600) and {public}; key id {key.key_id}")


@click.command()
@click.argument("ref")
@click.option("--key", "key_file", required=True, type=KEY_FILE, help="Private key file (PEM).")
@click.option("--json", "as_json", is_flag=True, help="Print the envelope as JSON.")
@pass_ctx
def sign(ctx: CliContext, ref: str, key_file: Path, as_json: bool) -> None:
    """Sign version REF (NS/NAME:VERSION) and record the signature."""
    reference = Reference.parse(ref)
    key = load_private_key(key_file)
    envelope = ctx.store(create=False).sign(reference, key)
    if as_json:
        emit_json(envelope.to_json())
        return
    note(f"{reference} signed by key {key.key_id}")


def _trusted(settings: dict[str, Any]) -> tuple[list[PublicKey], list[TrustEntry]]:
    """The namespace's trust entries: the keys trusted now, and every entry."""
    entries = [TrustEntry.from_json(e) for e in settings.get("trusted_keys") or []]
    now = utc_now()
    return [public_key_from_raw(e.raw) for e in entries if e.active(now)], entries


def _signed_by(envelopes: list[Envelope], package: PackageRef, keys: list[PublicKey]) -> list[str]:
    found: list[str] = []
    for envelope in envelopes:
        try:
            found += verify_envelope(envelope, package, keys).signed_by
        except SignatureInvalid:
            continue
    return list(dict.fromkeys(found))


def check_signatures(store: StoreAPI, reference: Reference, key_file: Path) -> dict[str, Any]:
    """Verify, on this machine, that version ``reference`` carries a signature by the key in
    ``key_file``; SignatureInvalid (exit 3) naming the cause if not. Also which of the
    namespace's trusted keys signed it."""
    key = load_public_key(key_file)
    record = store.show(reference)
    package = PackageRef.of(record.require_manifest())
    if package.blake3 != record.digest.hex:
        raise DigestMismatch(
            f"{reference}: the manifest hashes to blake3:{package.blake3}, not to the "
            f"package digest {record.digest}"
        )
    envelopes = store.signatures(record.reference)
    if not envelopes:
        raise SignatureInvalid(f"{reference} carries no signature")
    first: SignatureInvalid | None = None
    for envelope in envelopes:
        try:
            verify_envelope(envelope, package, [key])
            break
        except SignatureInvalid as exc:
            # A bad signature by this key says more than an envelope by another key.
            if first is None or exc.detail.startswith("bad signature"):
                first = exc
    else:
        assert first is not None
        raise first
    keys, entries = _trusted(store.namespace_settings(str(reference.namespace)))
    expired = [e.key_id for e in entries if not e.active(utc_now())]
    return {
        "reference": str(record.reference),
        "digest": str(record.digest),
        "key_id": key.id,
        "signatures": len(envelopes),
        "trusted_signers": _signed_by(envelopes, package, keys),
        "expired_trust_signers": _signed_by(
            envelopes, package, [public_key_from_raw(e.raw) for e in entries if e.key_id in expired]
        ),
    }


COMMANDS = [key_group, sign]
