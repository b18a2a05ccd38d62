"""A store's objects seen through its own backend, whatever its kind: what tests list,
read and damage instead of paths under ``home/storage``.

The matrix (``tests/matrix.py``) runs the same tests on a directory (embedded) and on
an S3 bucket prefix (scale-out). A test that looked at ``home/storage`` saw nothing on
S3 and passed or failed for the wrong reason; through :class:`Stored` it sees the
objects the store really holds. Reading and listing go through the data-plane protocol;
what the protocol does not do on purpose (rewrite a published object, list the
in-flight ones) goes to the directory for ``file://`` and to the backend's own S3 client
for ``s3://``. Nothing here is a stand-in: the bytes are the store's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from artifactstore.dataplane.backends import open_backend
from artifactstore.dataplane.backends.local import LocalBackend
from artifactstore.dataplane.backends.local_staging import LocalStaging
from artifactstore.dataplane.backends.s3 import S3Backend
from artifactstore.dataplane.backends.s3_staging import S3Staging
from artifactstore.dataplane.backends.s3_writes import STAGING
from artifactstore.dataplane.layout import BLOB_PREFIX, PACK_PREFIX, blob_key, storage_root
from artifactstore.dataplane.protocol import Backend
from artifactstore.dataplane.staging import Staging
from artifactstore.model.identity import Digest
from artifactstore.store import Store

__all__ = ["Stored"]


class Stored:
    """The objects of one backend (a store's hot tier unless said otherwise)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.root = backend.properties.local_root  # None: not a directory (S3)

    @classmethod
    def of(cls, store: Store, tier: str = "local") -> Stored:
        """The backend ``tier`` ("local": hot, "cold") of an open store."""
        return cls(store.plane.named(tier))

    @classmethod
    def at(cls, home: Path, env: Mapping[str, str], *, cold: bool = False) -> Stored:
        """The storage of the store a process (a server, the CLI) runs on with ``env``
        and ``home``: its STORAGE_URL (COLD_STORAGE_URL), else the default under ``home``."""
        variable = "ARTIFACTSTORE_COLD_STORAGE_URL" if cold else "ARTIFACTSTORE_STORAGE_URL"
        default = home / "cold" if cold else storage_root(home)
        url = env.get(variable) or f"file://{default.absolute()}"
        return cls(open_backend(url, variable, fsync=False, name="cold" if cold else "local"))

    # --- what is there ------------------------------------------------------------------

    def keys(self) -> set[str]:
        """Keys of the published objects: whole blobs and packs."""
        return set(self.backend.list(BLOB_PREFIX)) | set(self.backend.list(PACK_PREFIX))

    def blob_keys(self) -> set[str]:
        """Keys of the whole blobs only (each at its digest's key)."""
        return set(self.backend.list(BLOB_PREFIX))

    def staging(self) -> list[str]:
        """The in-flight objects of unfinished writes (``tmp/`` keys; on S3 also open
        multipart uploads), which a finished or cancelled write leaves none of."""
        if isinstance(self.backend, S3Backend):
            prefix = self.backend.prefix
            return sorted(k[len(prefix) :] for k in self.backend.staging())
        assert self.root is not None, self.backend
        tmp = self.root / STAGING
        return sorted(STAGING + p.name for p in tmp.iterdir()) if tmp.is_dir() else []

    def put_staging(self, name: str, data: bytes) -> str:
        """Leave an in-flight object as a crashed write would (a process killed between
        writing and publishing); returns its key (``tmp/NAME``)."""
        key = STAGING + name
        if isinstance(self.backend, S3Backend):
            full = self.backend.prefix + key
            self.backend.client.put_object(Bucket=self.backend.bucket, Key=full, Body=data)
        else:
            assert self.root is not None, self.backend
            (self.root / key).write_bytes(data)
        return key

    def exists(self, key: str) -> bool:
        """Whether an object (a published one, or an in-flight one under ``tmp/``) is there."""
        if key.startswith(STAGING):
            return key in self.staging()
        return self.backend.stat(key) is not None

    def everything(self) -> set[str]:
        """Every object: published, staged for a write, an upload session's bytes."""
        if isinstance(self.backend, S3Backend):
            return set(self.backend.list()) | set(self.backend.staging())
        assert self.root is not None, self.backend
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}

    def upload_staging(self) -> Staging:
        """The upload sessions' staging on this backend (as the store opens it)."""
        if isinstance(self.backend, S3Backend):
            return S3Staging(self.backend)
        assert isinstance(self.backend, LocalBackend) and self.root is not None
        return LocalStaging(self.backend, self.root, fsync=False)

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is an object at its own key (not packed)."""
        return self.exists(blob_key(Digest.parse(digest)))

    def read(self, key: str) -> bytes:
        return b"".join(self.backend.read(key))

    # --- damage from outside --------------------------------------------------------------

    def replace(self, key: str, data: bytes) -> None:
        """Write the object at ``key`` behind the store's back, over what is there, as a
        failing disk or a hand would (through the protocol a published key never changes:
        its files are read-only, and S3 puts refuse an existing key)."""
        if isinstance(self.backend, S3Backend):
            full = self.backend.prefix + key
            self.backend.client.put_object(Bucket=self.backend.bucket, Key=full, Body=data)
            return
        assert self.root is not None, self.backend
        path = self.root / key
        if path.exists():
            path.chmod(0o644)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def flip(self, key: str, at: int = 0) -> None:
        """Flip the low bit of byte ``at`` of the object at ``key``."""
        data = bytearray(self.read(key))
        data[at] ^= 0x01
        self.replace(key, bytes(data))

    def remove(self, key: str) -> None:
        """Delete the object behind the store's back."""
        self.backend.delete(key)
