"""Sending many small blobs in few requests: ``POST /v1/blobs/batch`` (docs/api.md).

A remote push of 10,000 small files sent one ``POST /v1/blobs`` per file:
20,000 S3 requests on an S3-backed server and a loopback round trip each.
Here the missing small files travel as tar streams of up to ``BATCH_FILES``
files or ``BATCH_BYTES`` bytes, each member named by its BLAKE3 digest, and
the server stores each batch in one pack. A server without the route (an
older one: 404 or 405) or one that refuses a batch's size (413: a smaller
pack threshold or member count) gets those files one by one instead, as
before.
"""

from __future__ import annotations

import tarfile
import threading
from collections.abc import Iterator, Sequence

from artifactstore import errors
from artifactstore.client.http import HttpClient
from artifactstore.errors import InvalidInput
from artifactstore.model.identity import BlobDigests
from artifactstore.model.records import LocalFile, Progress, no_progress

__all__ = ["BATCH_BYTES", "BATCH_FILES", "BATCH_MEMBER_MAX", "Batches"]

#: Files of at most this size go in batches (the server's default pack threshold).
BATCH_MEMBER_MAX = 256 * 1024
#: A batch ends at this many files or bytes, whichever comes first.
BATCH_FILES = 1000
BATCH_BYTES = 8 * 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE
_SLICE = 1 << 20  # the body goes out in pieces of about this size (PERF-NOTES)

Item = tuple[LocalFile, BlobDigests]


class Unsupported(Exception):
    """The server cannot take this batch: send its files one by one.

    ``counted``: bytes of the batch the progress bar already counted."""

    def __init__(self, counted: int) -> None:
        super().__init__(counted)
        self.counted = counted


class _Stopped(Exception):
    """The push was stopped (Ctrl-C, or another transfer failed); nobody sees it."""


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _header(digests: BlobDigests) -> bytes:
    info = tarfile.TarInfo(str(digests.blake3))
    info.size = digests.size
    info.mode = 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _body(items: Sequence[Item], progress: Progress, stop: threading.Event) -> Iterator[bytes]:
    """The tar stream of ``items``: each file read whole (they are small), in ~1 MiB pieces."""
    out = bytearray()
    for file, digests in items:
        if stop.is_set():
            raise _Stopped(file.source)
        with open(file.source, "rb") as f:
            data = f.read(digests.size + 1)
        if len(data) != digests.size:
            raise InvalidInput(f"{file.source} changed while it was being pushed")
        out += _header(digests)
        out += data
        out += bytes(_padded(digests.size) - digests.size)
        progress(digests.size)
        if len(out) >= _SLICE:
            yield bytes(out)
            out.clear()
    out += bytes(2 * _BLOCK)
    yield bytes(out)


def groups(items: Sequence[Item]) -> list[list[Item]]:
    """``items`` cut into batches of at most ``BATCH_FILES`` files and about ``BATCH_BYTES``."""
    out: list[list[Item]] = []
    current: list[Item] = []
    held = 0
    for item in items:
        if current and (len(current) >= BATCH_FILES or held + item[1].size > BATCH_BYTES):
            out.append(current)
            current, held = [], 0
        current.append(item)
        held += item[1].size
    if current:
        out.append(current)
    return out


class Batches:
    """Batch uploads into one server; remembers a server that has no batch route."""

    def __init__(self, http: HttpClient) -> None:
        self._http = http
        self.supported = True

    def send(
        self,
        namespace: str,
        items: Sequence[Item],
        progress: Progress,
        stop: threading.Event,
        attempts: int,
    ) -> None:
        """Send one batch; raises Unsupported when the server cannot take it.

        A batch answered ``missing_blobs`` (GC collected bytes it was about to
        record: a grace period shorter than the upload) is sent again, like a
        one-shot upload; the progress bar counts its bytes once.
        """
        if not self.supported:
            raise Unsupported(0)
        length = sum(_BLOCK + _padded(d.size) for _, d in items) + 2 * _BLOCK
        counted = 0

        def count(n: int) -> None:
            nonlocal counted
            counted += n
            progress(n)

        for attempt in range(attempts):
            try:
                self._http.request(
                    "POST",
                    "/v1/blobs/batch",
                    params={"namespace": namespace},
                    content=_body(items, count if not attempt else no_progress, stop),
                    headers={"Content-Length": str(length), "Content-Type": "application/x-tar"},
                )
                return
            except errors.MissingBlobs:
                if attempt == attempts - 1:
                    raise
            except errors.QuotaExceeded:
                raise  # the namespace is full, however its blobs are sent
            except errors.LimitExceeded as exc:
                raise Unsupported(counted) from exc  # a smaller member limit: one by one
            except errors.ArtifactStoreError as exc:
                if isinstance(exc, errors.NotFound) or exc.code == "method_not_allowed":
                    self.supported = False  # an older server: no batch route
                    raise Unsupported(counted) from exc
                raise
