"""The one module that knows where things live, in a data directory and in a backend.

Data directory (``ARTIFACTSTORE_HOME``)::

    <home>/
      artifactstore.db            SQLite control plane (WAL mode)
      storage/                    local backend root (file:// default)
        blobs/<algo>/<h0h1>/<hex>  published blobs, read-only
        packs/<h0h1>/<id>          small blobs of one push, end to end, read-only
        tmp/                      staging for in-flight writes (same file system)

Backend keys are the ``blobs/...`` part: the address of a blob is its
whole-content digest; how a blob is represented in a backend (whole, later
chunked or compressed) is recorded per storage location in the control plane,
never encoded here.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from artifactstore.errors import InvalidReference
from artifactstore.model.identity import Digest

__all__ = [
    "BLOB_PREFIX",
    "PACK_PREFIX",
    "blob_key",
    "database_path",
    "digest_from_key",
    "pack_key",
    "storage_root",
]

BLOB_PREFIX = "blobs/"
PACK_PREFIX = "packs/"


def blob_key(digest: Digest) -> str:
    """One level of 256 fan-out directories, as restic's ``data/`` and the CNCF
    registry's ``blobs/sha256/`` have.

    Two levels (65,536 directories) cost a directory per blob until a store
    holds hundreds of thousands: a 10,000-file push created ~9,800 of them,
    and their metadata doubled what each flush wrote. One level keeps 4,000
    names per directory at a million blobs, which ext4 and XFS index.
    """
    h = digest.hex
    return f"{BLOB_PREFIX}{digest.algorithm}/{h[0:2]}/{h}"


def pack_key() -> str:
    """A new pack's key: random, since a pack is a container, not content.

    Which blobs a pack holds, and where, is recorded per storage location
    (the blob's address stays its digest); the same fan-out as blobs.
    """
    name = secrets.token_hex(16)
    return f"{PACK_PREFIX}{name[0:2]}/{name}"


def digest_from_key(key: str) -> Digest | None:
    """Invert :func:`blob_key`; None for anything that is not a blob key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != BLOB_PREFIX.rstrip("/"):
        return None
    try:
        d = Digest.parse(f"{parts[1]}:{parts[3]}")
    except InvalidReference:
        return None
    return d if blob_key(d) == key else None


def database_path(home: Path) -> Path:
    return home / "artifactstore.db"


def storage_root(home: Path) -> Path:
    return home / "storage"
