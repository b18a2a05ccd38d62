"""The offline verifier of the transparency log: checkpoints, proofs and entries in,
a verdict out (an exception naming the cause), with no database, server or storage.

What an auditor runs against what the registry published (docs/provenance.md,
"Transparency log")::

    cp = verify_checkpoint(note, public_key)          # provenance.checkpoint
    verify_inclusion(event["hash"], proof, cp)        # event seq = leaf_index + 1
    verify_consistency(old_cp, new_cp, proof)
"""

from __future__ import annotations

from artifactstore.errors import ProofInvalid
from artifactstore.model.tlog import Checkpoint, ConsistencyProof, InclusionProof, entry_of
from artifactstore.provenance import merkle

__all__ = ["verify_consistency", "verify_inclusion"]


def verify_inclusion(entry: bytes | str, proof: InclusionProof, checkpoint: Checkpoint) -> None:
    """Raise ProofInvalid unless ``entry`` is leaf ``proof.leaf_index`` of the tree that
    ``checkpoint`` signs.

    ``entry``: the 32 raw bytes of an event's chain hash, or the chain hash as the
    event log shows it (``blake3:<hex>``).
    """
    raw = entry_of(entry) if isinstance(entry, str) else entry
    if len(raw) != 32:
        raise ProofInvalid(f"a log entry is 32 bytes (an event's chain hash), not {len(raw)}")
    if proof.tree_size != checkpoint.size:
        raise ProofInvalid(
            f"the proof is for a tree of {proof.tree_size} entries, the checkpoint's tree "
            f"has {checkpoint.size}"
        )
    merkle.verify_inclusion(
        proof.leaf_index, proof.tree_size, merkle.leaf_hash(raw), proof.hashes, checkpoint.root
    )


def verify_consistency(old: Checkpoint, new: Checkpoint, proof: ConsistencyProof) -> None:
    """Raise ProofInvalid unless the tree ``new`` signs extends the one ``old`` signs:
    its first ``old.size`` entries are exactly ``old``'s (nothing removed or rewritten)."""
    if old.origin != new.origin:
        raise ProofInvalid(f"the checkpoints are of two logs: {old.origin!r} and {new.origin!r}")
    if old.size == 0:  # every tree extends the empty one; its root is fixed
        if old.root != merkle.EMPTY_ROOT:
            raise ProofInvalid("the older checkpoint's empty tree has a wrong root hash")
        return
    if (proof.old_size, proof.new_size) != (old.size, new.size):
        raise ProofInvalid(
            f"the proof is from size {proof.old_size} to {proof.new_size}, the checkpoints' "
            f"sizes are {old.size} and {new.size}"
        )
    if old.size > new.size:
        raise ProofInvalid(
            f"the newer checkpoint's tree ({new.size} entries) is smaller than the older "
            f"one's ({old.size}): entries were removed"
        )
    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof.hashes)
