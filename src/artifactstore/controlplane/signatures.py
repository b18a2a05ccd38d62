"""Signatures on versions and the namespace's signature policy (docs/provenance.md).

Inside the caller's write transaction: an envelope is checked against the
version it is over and the namespace's trusted keys (the settings as they
stand in this transaction, so the policy is the one the log holds at that
point), then recorded as ``signature.added``.

What the store can check it checks: the envelope, the statement and the
subject (this version's reference and both manifest digests) always; each
signature by a trusted key cryptographically (a trusted key's signature that
does not verify refuses the envelope, expired or not). A signature by a key
the namespace does not trust cannot be checked here (there is no key to
check it with) and is recorded as sent; ``verify --key`` checks it offline.
With ``require_signature``, at least one signature must verify with a key
trusted now (its entry not expired), for a commit and for a signature added
later alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, select

from artifactstore.controlplane import namespaces
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.eventlog import append_many
from artifactstore.errors import SignatureInvalid, SignatureRequired
from artifactstore.model.clock import utc_iso
from artifactstore.model.envelope import Envelope, pae
from artifactstore.model.events import SignatureAdded
from artifactstore.model.identity import Namespace
from artifactstore.model.records import NamespaceSettings
from artifactstore.model.versions import VersionRecord
from artifactstore.provenance.dsse import PackageRef, check_binding
from artifactstore.provenance.keys import public_key_from_raw

__all__ = ["add", "check", "check_all", "listed", "package_ref", "require"]


def package_ref(record: VersionRecord) -> PackageRef:
    return PackageRef(str(record.reference), record.digest.hex, record.sha256.hex)


def check(
    envelope: Envelope, package: PackageRef, settings: NamespaceSettings, now: float
) -> tuple[str, ...]:
    """The trusted, unexpired keys that signed ``envelope`` over ``package``.

    SignatureInvalid when the envelope is not about ``package``, when a
    trusted key's signature does not verify, or, if the namespace requires
    signatures, when no trusted key whose trust has not expired signed it.
    """
    check_binding(envelope, package)
    at = utc_iso(now)
    message = pae(envelope.payload_type, envelope.payload)
    keys = [(e, public_key_from_raw(e.raw)) for e in settings.trusted_keys]
    active: list[str] = []
    expired: list[str] = []
    for sig in envelope.signatures:
        by = next(((e, k) for e, k in keys if k.verify(sig.sig, message)), None)
        if by is None:
            if any(e.key_id == sig.keyid for e, _ in keys):
                raise SignatureInvalid(
                    f"bad signature: the signature by trusted key {sig.keyid[:16]}... does not "
                    f"verify over {package.reference}"
                )
            continue
        entry = by[0]
        (active if entry.active(at) else expired).append(entry.key_id)
    if settings.require_signature and not active:
        if expired:
            entry = next(e for e, _ in keys if e.key_id == expired[0])
            raise SignatureInvalid(
                f"expired trust: {package.reference} is signed by key {entry.key_id[:16]}..., "
                f"whose trust in namespace {package.reference.split('/')[0]} expired at "
                f"{entry.expires}; the namespace requires a signature by a trusted key"
            )
        shown = ", ".join(f"{k[:16]}..." if k else "(no keyid)" for k in envelope.key_ids[:3])
        raise SignatureInvalid(
            f"untrusted key: {package.reference} is signed by {shown}, which namespace "
            f"{package.reference.split('/')[0]} does not trust; it requires a signature by a "
            "trusted key ('artifactstore namespace trust')"
        )
    return tuple(dict.fromkeys(active))


def require(
    conn: Connection,
    package: PackageRef,
    envelopes: Sequence[Envelope],
    now: float,
    settings: NamespaceSettings | None = None,
) -> None:
    """A commit to a namespace that requires signatures carries one by a trusted key.

    ``settings``: the namespace's, when the caller read them in this transaction
    already (a commit reads them once, under the log's append lock).
    """
    if settings is None:
        settings = namespaces.get(conn, Namespace(package.reference.split("/")[0]))
    if not settings.require_signature:
        return
    if not envelopes:
        raise SignatureRequired(
            f"signature required: namespace {package.reference.split('/')[0]} refuses unsigned "
            "commits; push with --sign KEYFILE (a key the namespace trusts)"
        )
    causes: list[SignatureInvalid] = []
    for envelope in envelopes:
        try:
            if check(envelope, package, settings, now):
                return
        except SignatureInvalid as exc:
            causes.append(exc)
    raise causes[0]


def check_all(
    envelopes: Sequence[Envelope], package: PackageRef, settings: NamespaceSettings, now: float
) -> None:
    """Refuse now any envelope that :func:`add` would refuse (a commit checks them before
    it writes anything, so that a group commit's other commits are not rolled back)."""
    for envelope in envelopes:
        check(envelope, package, settings, now)


def _recorded(conn: Connection, version_id: int) -> set[str]:
    s = t.signatures
    return set(conn.scalars(select(s.c.envelope_sha256).where(s.c.version_id == version_id)))


def add(
    conn: Connection,
    record: VersionRecord,
    envelopes: Sequence[Envelope],
    actor: str,
    now: float,
) -> int:
    """Check and record envelopes over ``record``; one already recorded is skipped.
    Returns how many were new."""
    if not envelopes:  # most commits: no statement at all under the append lock
        return 0
    package = package_ref(record)
    settings = namespaces.get(conn, record.reference.namespace)
    seen = _recorded(conn, record.id)
    new: list[SignatureAdded] = []
    for envelope in envelopes:
        check(envelope, package, settings, now)
        digest = envelope.digest()
        if digest in seen:
            continue
        seen.add(digest)
        new.append(
            SignatureAdded(record.id, package.reference, str(record.digest), envelope.to_json())
        )
    append_many(conn, new, actor)
    return len(new)


def listed(conn: Connection, version_id: int) -> list[Envelope]:
    """The envelopes recorded over a version, oldest first."""
    s = t.signatures
    rows = conn.scalars(select(s.c.envelope).where(s.c.version_id == version_id).order_by(s.c.id))
    return [Envelope.from_json(json.loads(text)) for text in rows]
