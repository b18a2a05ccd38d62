"""The transparency log's verbs over HTTP (``/v1/log/...``), mixed into ``RemoteStore``.

The proofs come from the server; the audit verifies them here, on the
client, with the offline verifier (``provenance``): what the server says is
checked, not trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import httpx

from artifactstore.errors import IntegrityError, InvalidCheckpoint, ProofInvalid
from artifactstore.model.tlog import (
    AuditFinding,
    AuditReport,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    LogKey,
)
from artifactstore.provenance.checkpoint import parse_checkpoint
from artifactstore.provenance.logproofs import verify_consistency

__all__ = ["RemoteLog"]


class RemoteLog:
    """``log_*`` verbs of :class:`~artifactstore.client.remote.RemoteStore`."""

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        raise NotImplementedError  # RemoteStore's

    def log_checkpoint(self) -> str:
        """The server's signed checkpoint of its whole log (C2SP note), unverified."""
        return self._request("GET", "/v1/log/checkpoint").text

    def log_key(self) -> LogKey:
        body = self._request("GET", "/v1/log/key").json()
        return LogKey(body["name"], body["public_key"], body["vkey"])

    def log_inclusion(self, seq: int, size: int | None = None) -> InclusionProof:
        params = {"seq": seq} if size is None else {"seq": seq, "size": size}
        body = self._request("GET", "/v1/log/proof/inclusion", params=params).json()
        return InclusionProof.from_json(body)

    def log_consistency(self, old: int, new: int | None = None) -> ConsistencyProof:
        params = {"old": old} if new is None else {"old": old, "new": new}
        body = self._request("GET", "/v1/log/proof/consistency", params=params).json()
        return ConsistencyProof.from_json(body)

    def log_audit(
        self,
        checkpoints: Sequence[tuple[str, Checkpoint]],
        verify: Callable[[str], Checkpoint] | None = None,
    ) -> AuditReport:
        """Each checkpoint against the server's current tree, by a consistency proof
        verified here (the server's own audit recomputes from its rows instead).

        The current checkpoint is the reference every proof is checked against,
        so ``verify`` checks its signature first: a server that signs with a key
        the auditor does not hold could prove anything. Unverified, the audit
        reports it as a problem of the log and checks nothing against it.
        """
        note = self.log_checkpoint()
        try:
            current = parse_checkpoint(note)[0] if verify is None else verify(note)
        except (InvalidCheckpoint, IntegrityError) as exc:
            report = AuditReport()
            report.problems.append(f"the server's current checkpoint: {exc.code}: {exc.detail}")
            unchecked = "not checked: the server's current checkpoint does not verify"
            report.checkpoints.extend(
                AuditFinding(name, cp.size, unchecked) for name, cp in checkpoints
            )
            return report
        report = AuditReport(current.size, current.root)
        for name, cp in checkpoints:
            report.checkpoints.append(AuditFinding(name, cp.size, self._extends(cp, current)))
        return report

    def _extends(self, cp: Checkpoint, current: Checkpoint) -> str | None:
        if cp.size > current.size:
            return (
                f"the log holds {current.size} events, fewer than the {cp.size} this "
                "checkpoint signs: events were cut off its end"
            )
        proof = (
            self.log_consistency(cp.size, current.size) if cp.size else ConsistencyProof(0, 0, ())
        )
        try:
            verify_consistency(cp, current, proof)
        except ProofInvalid as exc:
            return f"the log does not extend this checkpoint: {exc.detail}"
        return None
