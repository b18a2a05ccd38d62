"""Signatures on versions: list, add (verified first), sign with a local key.

The checks and the recording are the control plane's (``controlplane/signatures.py``),
each in one write transaction with the version looked up inside it, so a
signature is never recorded over a version deleted meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

from artifactstore.controlplane import packages
from artifactstore.controlplane import signatures as signing
from artifactstore.model.envelope import Envelope, Signer
from artifactstore.model.identity import Reference
from artifactstore.provenance.dsse import sign_package
from artifactstore.services.core import Core

__all__ = ["SigningService"]


class SigningService:
    def __init__(self, core: Core) -> None:
        self._core = core

    def signatures(self, ref: Reference) -> list[Envelope]:
        """The envelopes recorded over a live version, oldest first."""
        with self._core.db.read() as conn:
            return signing.listed(conn, packages.get(conn, ref).id)

    def add(self, ref: Reference, envelopes: Sequence[Envelope], actor: str) -> int:
        """Check and record envelopes over ``ref``; how many were new (0: all known)."""
        core = self._core
        with core.db.write() as conn:
            record = packages.get(conn, ref)
            return signing.add(conn, record, envelopes, actor, core.clock())

    def sign(self, ref: Reference, key: Signer, actor: str) -> tuple[Envelope, bool]:
        """Sign the version with ``key`` and record it; (envelope, whether it was new)."""
        core = self._core
        with core.db.write() as conn:
            record = packages.get(conn, ref)
            envelope = sign_package(signing.package_ref(record), key)
            added = signing.add(conn, record, [envelope], actor, core.clock())
        return envelope, added > 0
