"""Signatures (services/signing.py) and the transparency log (services/log.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from artifactstore.facade import Facade, as_reference
from artifactstore.model.envelope import Envelope, Signer
from artifactstore.model.identity import Reference

if TYPE_CHECKING:
    from artifactstore.model.tlog import (
        AuditReport,
        Checkpoint,
        ConsistencyProof,
        InclusionProof,
        LogKey,
    )

__all__ = ["ProvenanceVerbs"]


class ProvenanceVerbs:
    def signatures(self: Facade, ref: str | Reference) -> list[Envelope]:
        """The DSSE envelopes recorded over a version, oldest first."""
        return self.services.signing.signatures(as_reference(ref))

    def add_signature(
        self: Facade, ref: str | Reference, envelope: Envelope, actor: str | None = None
    ) -> bool:
        """Check and record an envelope over a version; False if it was already recorded.
        SignatureInvalid if it is not over this version or the namespace's policy refuses it."""
        return self.services.signing.add(as_reference(ref), [envelope], actor or self.actor) > 0

    def sign(self: Facade, ref: str | Reference, key: Signer, actor: str | None = None) -> Envelope:
        """Sign a version with a private key (``provenance.keys.load_private_key``) and record
        the envelope."""
        return self.services.signing.sign(as_reference(ref), key, actor or self.actor)[0]

    # --- the transparency log (services/log.py) -----------------------------------------

    def log_checkpoint(self: Facade) -> str:
        """A signed checkpoint (C2SP note) of the whole event log as it is now."""
        return self.services.log.checkpoint()

    def log_key(self: Facade) -> LogKey:
        """The log's public key (PEM and C2SP verifier key), for auditors."""
        return self.services.log.key()

    def log_inclusion(self: Facade, seq: int, size: int | None = None) -> InclusionProof:
        """Proof that event ``seq`` is in the tree of ``size`` entries (None: all)."""
        return self.services.log.inclusion(seq, size)

    def log_consistency(self: Facade, old: int, new: int | None = None) -> ConsistencyProof:
        """Proof that the tree of ``new`` entries (None: all) extends that of ``old``."""
        return self.services.log.consistency(old, new)

    def log_audit(
        self: Facade,
        checkpoints: Sequence[tuple[str, Checkpoint]],
        verify: Callable[[str], Checkpoint] | None = None,
    ) -> AuditReport:
        """Recompute the tree from the event rows and check each (name, checkpoint);
        ``verify`` is for a remote audit (StoreAPI.log_audit): the rows need no signature."""
        return self.services.log.audit(checkpoints)
