"""Provenance: signing keys, DSSE signatures and the transparency log's proofs.

Everything here is pure (keys, bytes and hashes in, verdicts out) and needs no
database, server or storage: an auditor runs it offline against what the
registry published. The control plane, the services, the server and the CLI
build on it; it imports only the model and the error tree.
"""

from artifactstore.provenance.checkpoint import verify_checkpoint
from artifactstore.provenance.logproofs import verify_consistency, verify_inclusion

__all__ = ["verify_checkpoint", "verify_consistency", "verify_inclusion"]
