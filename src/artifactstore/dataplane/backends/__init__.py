"""The backends this build has, by URL scheme, and the data plane a configuration names.

The table is written out by hand (no import-time registration): a new
backend adds one line to ``SCHEMES`` and its module under this package.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from artifactstore.config import Settings
from artifactstore.dataplane.backends.local import LocalBackend
from artifactstore.dataplane.backends.local_staging import LocalStaging
from artifactstore.dataplane.blobs import DataPlane
from artifactstore.dataplane.protocol import Backend
from artifactstore.dataplane.staging import Staging
from artifactstore.errors import InvalidInput

__all__ = ["SCHEMES", "open_backend", "open_data_plane"]

#: What opens a backend: (the whole URL, fsync, the backend's name).
Opener = Callable[[str, bool, str], Backend]


def _open_local(url_text: str, fsync: bool, name: str) -> Backend:
    return LocalBackend(Path(urlparse(url_text).path), fsync=fsync, name=name)


def _open_s3(url_text: str, fsync: bool, name: str) -> Backend:
    # Imported on use: boto3 costs ~0.3 s of start-up a file:// store never needs.
    # S3 acknowledges only durable writes: there is nothing to fsync.
    from artifactstore.dataplane.backends.s3 import open_s3

    return open_s3(url_text, name)


#: URL scheme -> backend. Upload staging is a capability of the hot backend (below).
SCHEMES: dict[str, Opener] = {"file": _open_local, "s3": _open_s3}


def open_backend(url_text: str, setting: str, *, fsync: bool, name: str) -> Backend:
    """The backend ``url_text`` names (``setting`` names the setting in errors)."""
    url = urlparse(url_text)
    opener = SCHEMES.get(url.scheme)
    if opener is None:
        supported = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise InvalidInput(
            f"unsupported {setting} scheme {url.scheme!r}: this build supports {supported}"
        )
    return opener(url_text, fsync, name)


def open_data_plane(settings: Settings) -> tuple[DataPlane, Staging]:
    """The hot backend (STORAGE_URL) and the cold tier's, and the upload staging."""
    hot = open_backend(settings.storage_url, "STORAGE_URL", fsync=settings.fsync, name="local")
    cold = open_backend(
        settings.cold_storage_url, "COLD_STORAGE_URL", fsync=settings.fsync, name="cold"
    )
    if _overlap(hot, cold) or settings.storage_url == settings.cold_storage_url:
        raise InvalidInput(
            "COLD_STORAGE_URL must differ from STORAGE_URL, and neither may hold the other "
            "(a directory or bucket prefix inside the other's)"
        )
    plane = DataPlane(
        hot,
        primary=settings.primary_digest,  # type: ignore[arg-type]
        cold=cold,
        pack_max=settings.pack_max_bytes,
    )
    return plane, _staging(hot, settings)


def _staging(hot: Backend, settings: Settings) -> Staging:
    """Upload staging lives with the hot backend, so any replica can continue a session."""
    if isinstance(hot, LocalBackend):
        return LocalStaging(hot, Path(urlparse(settings.storage_url).path), fsync=settings.fsync)
    from artifactstore.dataplane.backends.s3 import S3Backend
    from artifactstore.dataplane.backends.s3_staging import S3Staging

    if isinstance(hot, S3Backend):
        return S3Staging(hot)
    raise InvalidInput(f"STORAGE_URL {settings.storage_url!r} cannot stage uploads")


def _overlap(hot: Backend, cold: Backend) -> bool:
    """Whether one backend's objects live inside the other's: the same directory or
    bucket prefix, or one inside the other (each would list, and GC delete, the other's)."""
    hot_root, cold_root = hot.properties.local_root, cold.properties.local_root
    if hot_root is not None and cold_root is not None:
        a, b = hot_root.resolve(), cold_root.resolve()
        return a == b or a.is_relative_to(b) or b.is_relative_to(a)
    from artifactstore.dataplane.backends.s3 import S3Backend

    if not (isinstance(hot, S3Backend) and isinstance(cold, S3Backend)):
        return False
    if (hot.endpoint, hot.bucket) != (cold.endpoint, cold.bucket):
        return False
    return hot.prefix.startswith(cold.prefix) or cold.prefix.startswith(hot.prefix)
