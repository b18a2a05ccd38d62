"""The transparency log's verbs: checkpoints, proofs, the audit, the periodic writer.

The tree is ``controlplane/tlog.py``'s; checkpoints and the key are
``provenance``'s. Every answer first makes sure the stored tree covers the
size it is for (``tlog.fill``, a no-op when it does), then reads O(log n)
rows in one read transaction.

The signing key is ``LOG_SIGNING_KEY``, or, unset, ``HOME/log-signing.key``
generated (mode 0600, with its ``.pub``) the first time a checkpoint is
signed: a zero-set-up store signs from the start. Its path is logged once,
never its content.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from artifactstore.controlplane import tlog
from artifactstore.dataplane.protocol import Backend
from artifactstore.errors import InvalidKey
from artifactstore.model.tlog import (
    AuditReport,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    LogKey,
)
from artifactstore.provenance import keys, merkle
from artifactstore.provenance.checkpoint import sign_checkpoint, vkey
from artifactstore.services.core import Core

__all__ = ["LogService", "checkpoint_key"]

_log = logging.getLogger("artifactstore.log")


def checkpoint_key(size: int) -> str:
    """The object a periodic checkpoint of ``size`` entries is written to."""
    return f"checkpoint-{size}.txt"


class LogService:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._key: keys.PrivateKey | None = None
        self._key_lock = threading.Lock()

    # --- the key -------------------------------------------------------------------

    def signing_key(self) -> keys.PrivateKey:
        """The log key, loaded once (generated first if it is the unset default)."""
        with self._key_lock:
            if self._key is None:
                self._key = self._load_key()
            return self._key

    def _load_key(self) -> keys.PrivateKey:
        settings = self._core.settings
        path = settings.log_key_path()
        if not settings.log_signing_key and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                keys.write_key_pair(keys.generate(), path)
                _log.warning(
                    "generated the transparency log's signing key at %s (set LOG_SIGNING_KEY "
                    "to choose one; its public key is %s)",
                    path,
                    path.with_suffix(".pub"),
                )
            except InvalidKey:
                if not path.exists():  # else another process generated it first
                    raise
        return keys.load_private_key(path)

    def key(self) -> LogKey:
        public = self.signing_key().public
        origin = self._core.settings.log_origin
        return LogKey(origin, public.pem().decode(), vkey(origin, public))

    # --- the tree ------------------------------------------------------------------

    def _size(self) -> int:
        """The log's size now, with the stored tree filled up to it."""
        db = self._core.db
        with db.read() as conn:
            size, have = tlog.log_size(conn), tlog.filled_size(conn)
        if have < size >> tlog.STORED_LEVEL << tlog.STORED_LEVEL:
            tlog.fill(db)
        return size

    def head(self) -> Checkpoint:
        """The unsigned checkpoint of the whole log as it is now."""
        size = self._size()
        with self._core.db.read() as conn:
            root = merkle.root(size, tlog.subtrees(conn))
        return Checkpoint(self._core.settings.log_origin, size, root)

    def checkpoint(self) -> str:
        """A signed checkpoint (C2SP note) of the whole log as it is now."""
        return sign_checkpoint(self.head(), self.signing_key())

    def inclusion(self, seq: int, size: int | None = None) -> InclusionProof:
        """Proof that event ``seq`` is entry ``seq - 1`` of the tree of ``size`` entries."""
        current = self._size()
        size = current if size is None else size
        tlog.check_size(size, current, "size")
        tlog.check_size(seq, size, "seq")
        with self._core.db.read() as conn:
            hashes = merkle.inclusion_proof(seq - 1, size, tlog.subtrees(conn))
        return InclusionProof(seq - 1, size, tuple(hashes))

    def consistency(self, old: int, new: int | None = None) -> ConsistencyProof:
        """Proof that the tree of ``new`` entries extends the tree of ``old``."""
        current = self._size()
        new = current if new is None else new
        tlog.check_size(new, current, "new")
        tlog.check_size(old, new, "old")
        with self._core.db.read() as conn:
            hashes = merkle.consistency_proof(old, new, tlog.subtrees(conn))
        return ConsistencyProof(old, new, tuple(hashes))

    def audit(self, checkpoints: Sequence[tuple[str, Checkpoint]]) -> AuditReport:
        """Recompute the tree from the events and check each checkpoint (``tlog.audit``)."""
        with self._core.db.read() as conn:
            return tlog.audit(conn, checkpoints)

    def clear(self) -> None:
        """Drop the stored tree (``rebuild``); the next answer refills it."""
        with self._core.db.write() as conn:
            tlog.clear(conn)

    # --- the periodic checkpoint -----------------------------------------------------

    def publish(self, sink: Backend | None) -> dict[str, Any]:
        """Make a checkpoint and write it to ``sink`` unless one of its size is there."""
        note = self.checkpoint()
        size = int(note.split("\n", 2)[1])
        out: dict[str, Any] = {"tree_size": size, "written": None}
        if sink is not None:
            key = checkpoint_key(size)
            if sink.stat(key) is None:
                batch = sink.batch()
                try:
                    writer = batch.writer()
                    writer.write(note.encode())
                    writer.commit(key)
                    batch.commit()
                except BaseException:
                    batch.cancel()
                    raise
                out["written"] = key
        return out
