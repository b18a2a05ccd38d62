"""The data plane a configuration names, and staging a push's files into it.

Nothing here touches the database, so nothing here imports the control plane
(SQLAlchemy alone takes a third of a second to import on our machines): a
local push hashes and copies its files while those modules load, and only
then leases, publishes and records them (``Store.push``, ``gc.py`` step 1).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from artifactstore.config import Settings
from artifactstore.dataplane.backends.local import LocalBackend
from artifactstore.dataplane.backends.local_staging import LocalStaging
from artifactstore.dataplane.blobs import DataPlane, IngestBatch, Placement
from artifactstore.dataplane.staging import Staging
from artifactstore.errors import InvalidInput
from artifactstore.localfs import LocalFile
from artifactstore.model.identity import BlobDigests

__all__ = ["StagedFiles", "open_data_plane", "stage_files"]


def _local_root(url_text: str, setting: str) -> Path:
    url = urlparse(url_text)
    if url.scheme != "file":
        raise InvalidInput(
            f"unsupported {setting} scheme {url.scheme!r}: this build supports file://"
        )
    return Path(url.path)


def open_data_plane(settings: Settings) -> tuple[DataPlane, Staging]:
    """The hot backend (STORAGE_URL) and the cold tier's, and the upload staging."""
    root = _local_root(settings.storage_url, "STORAGE_URL")
    hot = LocalBackend(root, fsync=settings.fsync)
    cold_root = _local_root(settings.cold_storage_url, "COLD_STORAGE_URL")
    if cold_root.absolute() == root.absolute():
        raise InvalidInput("COLD_STORAGE_URL must differ from STORAGE_URL")
    cold = LocalBackend(cold_root, fsync=settings.fsync, name="cold")
    plane = DataPlane(
        hot,
        primary=settings.primary_digest,  # type: ignore[arg-type]
        cold=cold,
        pack_max=settings.pack_max_bytes,
    )
    return plane, LocalStaging(hot, root, fsync=settings.fsync)


@dataclass
class StagedFiles:
    """A push's files hashed and written to staging, not yet published.

    ``batch`` publishes them when committed; cancelling it (idempotent, and a
    no-op once committed) removes whatever is still staged.
    """

    batch: IngestBatch
    blobs: list[tuple[BlobDigests, Placement]]  # per file, in order: digests and placement


def stage_files(
    plane: DataPlane, files: Sequence[LocalFile], progress: Callable[[int], None]
) -> StagedFiles:
    batch = plane.batch()
    blobs: list[tuple[BlobDigests, Placement]] = []
    try:
        for f in files:
            try:
                src = io.FileIO(f.source)
            except OSError as exc:
                raise InvalidInput(f"cannot read {f.source}: {exc.strerror}") from exc
            with src:
                blobs.append(batch.ingest_file(src, progress))
    except BaseException:
        batch.cancel()
        raise
    return StagedFiles(batch, blobs)
