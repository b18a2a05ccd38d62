"""Staging a push's files: hashed and written into a batch, not yet published.

Nothing here touches the database, so nothing here imports the control plane
(SQLAlchemy alone takes a third of a second to import on our machines): a
local push hashes and copies its files while those modules load, and only
then leases, publishes and records them (``services/push.py``, ``gc.py`` step 1).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from artifactstore.dataplane.blobs import (
    DataPlane,
    IngestBatch,
    SmallBlob,
)
from artifactstore.errors import InvalidInput
from artifactstore.model.identity import BlobDigests
from artifactstore.model.records import Placement

__all__ = ["SmallBlobs", "StagedFiles", "stage_files"]


@dataclass
class StagedFiles:
    """A push's files hashed and written to staging, not yet published.

    ``batch`` publishes them when committed; cancelling it (idempotent, and a
    no-op once committed) removes whatever is still staged.
    """

    batch: IngestBatch
    #: Per file, in order: its digests, and where its bytes are staged (None: the
    #: store already held them, so nothing was staged).
    blobs: list[tuple[BlobDigests, Placement | None]]


#: Small files wait for one lookup of what the store holds per this many files,
#: or this many bytes held in memory, whichever comes first.
_GROUP_FILES = 1000
_GROUP_BYTES = 8 << 20


class SmallBlobs:
    """Small blobs appended to ``blobs`` in order, packed a group at a time.

    A group waits for one ``known`` lookup of which BLAKE3 digests the store
    holds; the others go into the batch's pack. Whole objects dedupe by their
    key at publish, but a pack's key is random, and a push that changes one
    file of 10,000 would otherwise store the other 9,999 again. A push's
    files and a batch upload's members (``services/blob_batches.py``) both
    go through here.
    """

    def __init__(
        self,
        batch: IngestBatch,
        blobs: list[tuple[BlobDigests, Placement | None]],
        known: Callable[[list[str]], set[str]] | None,
    ) -> None:
        self._batch = batch
        self._blobs = blobs
        self._known = known
        self._group: list[tuple[int, SmallBlob]] = []
        self._held = 0

    def add(self, small: SmallBlob) -> None:
        self._blobs.append((small.digests, None))
        self._group.append((len(self._blobs) - 1, small))
        self._held += len(small.data)
        if len(self._group) >= _GROUP_FILES or self._held >= _GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        """Pack the waiting group (what ``known`` names stays unpacked: placement None)."""
        group, known = self._group, self._known
        have = known([str(b.digests.blake3) for _, b in group]) if known and group else set()
        for i, small in group:
            if str(small.digests.blake3) not in have:
                self._blobs[i] = (small.digests, self._batch.pack(small))
        group.clear()
        self._held = 0


def stage_files(
    plane: DataPlane,
    sources: Sequence[str],
    progress: Callable[[int], None],
    known: Callable[[list[str]], set[str]] | None = None,
) -> StagedFiles:
    """Hash and stage every file (by path); ``known`` says which BLAKE3 digests the store holds.

    Small files go into the batch's pack unless ``known`` names them
    (:class:`SmallBlobs`). (A known blob that GC collects before the push
    records it makes the push stage again without ``known``: ``Store.push``.)
    """
    batch = plane.batch()
    blobs: list[tuple[BlobDigests, Placement | None]] = []
    small = SmallBlobs(batch, blobs, known)
    try:
        for source in sources:
            try:
                src = io.FileIO(source)
            except OSError as exc:
                raise InvalidInput(f"cannot read {source}: {exc.strerror}") from exc
            with src:
                got = batch.ingest_file(src, progress)
            if isinstance(got, SmallBlob):
                small.add(got)
            else:
                blobs.append(got)
        small.flush()
    except BaseException:
        batch.cancel()
        raise
    return StagedFiles(batch, blobs)
