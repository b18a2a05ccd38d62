"""Uploading a push's files: only what the server lacks, large files through resumable
sessions whose URLs are remembered in a small state file, so that an interrupted push
continues from the server's offsets instead of starting again."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import TypeVar

from artifactstore import errors
from artifactstore.client.batches import BATCH_MEMBER_MAX, Batches, Unsupported, groups
from artifactstore.client.http import HttpClient
from artifactstore.dataplane.digests import DualHasher
from artifactstore.errors import InvalidInput
from artifactstore.model.identity import BlobDigests
from artifactstore.model.records import LocalFile, Progress, no_progress

__all__ = ["SESSION_THRESHOLD", "UPLOAD_ATTEMPTS", "Uploader", "hash_file", "run_parallel"]

CHUNK = 1 << 20
SESSION_THRESHOLD = 8 * 1024 * 1024  # larger files go through resumable sessions
PATCH_SIZE = 64 * 1024 * 1024
BUSY_WAIT = 60.0  # seconds a resumed session may stay claimed by a crashed request
UPLOAD_ATTEMPTS = 3  # an upload answered missing_blobs is sent again (see Uploader.upload)


class _Stopped(Exception):
    """A transfer gave up because its push was stopped (Ctrl-C, or another one failed).

    Nobody sees it: the caller has already left with the reason it stopped."""


_T = TypeVar("_T")
_R = TypeVar("_R")


def run_parallel(
    fn: Callable[[_T], _R], items: Sequence[_T], parallel: int, stop: threading.Event
) -> list[_R]:
    """``fn`` over ``items`` on ``parallel`` threads, results in order.

    When a call fails, or the caller's thread is interrupted (Ctrl-C raises
    KeyboardInterrupt there, never in a worker), ``stop`` is set so that the
    running calls give up at their next chunk, the queued ones are dropped, and
    the caller leaves at once instead of waiting for every upload to end (what
    ``with ThreadPoolExecutor()`` does). A resumable session stays open on the
    server with what it received, and its URL in the state file, for a rerun.
    """
    pool = ThreadPoolExecutor(parallel)
    try:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:  # the first failure in submission order
            if f in done and (exc := f.exception()) is not None:
                raise exc
        return [f.result() for f in futures]
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _file_chunks(
    path: str, offset: int, length: int, progress: Progress, stop: threading.Event
) -> Iterator[bytes]:
    """The body of an upload, streamed in 1 MiB slices (never one large bytes object);
    it ends the request (the connection closes) as soon as ``stop`` is set."""
    with open(path, "rb") as f:
        f.seek(offset)
        remaining = length
        while remaining > 0:
            if stop.is_set():
                raise _Stopped(path)
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                raise InvalidInput(f"{path} shrank while it was being pushed")
            remaining -= len(chunk)
            progress(len(chunk))
            yield chunk


def hash_file(
    path: str, progress: Progress = no_progress, stop: threading.Event | None = None
) -> BlobDigests:
    """Both digests of a file; ``progress`` advances by each chunk hashed, ``stop`` ends it."""
    hasher = DualHasher(None)
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        while n := f.readinto(buf):
            if stop is not None and stop.is_set():
                raise _Stopped(path)
            hasher.update(memoryview(buf)[:n])
            progress(n)
    return hasher.result()


class _SessionState:
    """Upload URLs of unfinished pushes, so a rerun resumes them (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self._path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._load().get(key)

    def put(self, key: str, url: str | None) -> None:
        with self._lock:
            data = self._load()
            if url is None:
                data.pop(key, None)
            else:
                data[key] = url
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._path)


def _state_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "artifactstore" / "upload-sessions.json"


class Uploader:
    """Sends blobs into a namespace with ``parallel`` streams."""

    def __init__(self, http: HttpClient, parallel: int, state_path: Path | None) -> None:
        self._http = http
        self.parallel = parallel
        self._sessions = _SessionState(state_path or _state_path())
        self._batches = Batches(http)

    def upload_missing(
        self,
        namespace: str,
        blobs: Mapping[str, tuple[LocalFile, BlobDigests]],
        progress: Progress,
    ) -> int:
        """Send ``blobs`` (what a commit said ``namespace`` lacks) into it; how many.

        Small files travel in batches (``client/batches.py``: one request and one
        pack per batch), larger ones one by one, a large one through a session.
        """
        stop = threading.Event()
        todo = list(blobs)
        small = [blobs[n] for n in todo if blobs[n][1].size <= BATCH_MEMBER_MAX]
        large = [blobs[n] for n in todo if blobs[n][1].size > BATCH_MEMBER_MAX]

        def send_batch(items: list[tuple[LocalFile, BlobDigests]]) -> None:
            try:
                self._batches.send(namespace, items, progress, stop, UPLOAD_ATTEMPTS)
            except Unsupported as exc:  # one by one; the bytes counted once
                for file, digests in items:
                    self.upload(namespace, file, digests, no_progress, stop=stop)
                progress(sum(d.size for _, d in items) - exc.counted)

        def send_one(item: tuple[LocalFile, BlobDigests]) -> None:
            self.upload(namespace, *item, progress, stop=stop)

        tasks = [partial(send_batch, g) for g in groups(small)]
        tasks += [partial(send_one, item) for item in large]
        run_parallel(lambda task: task(), tasks, self.parallel, stop)
        return len(todo)

    def upload(
        self,
        namespace: str,
        file: LocalFile,
        digests: BlobDigests,
        progress: Progress,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        """Upload, and upload again if the server answers missing_blobs.

        A server whose GC grace period is shorter than an upload may collect
        the bytes between publishing and recording them (docs/retention.md); it
        then refuses the upload and asks for the bytes again. The progress bar
        counts them once.
        """
        stop = stop or threading.Event()
        for attempt in range(UPLOAD_ATTEMPTS):
            try:
                self._send(namespace, file, digests, progress if not attempt else no_progress, stop)
                return
            except errors.MissingBlobs:
                if attempt == UPLOAD_ATTEMPTS - 1:
                    raise
                self._sessions.put(self._session_key(digests), None)  # start a new session

    def _session_key(self, digests: BlobDigests) -> str:
        return f"{self._http.url} {digests.blake3}"

    def _send(
        self,
        namespace: str,
        file: LocalFile,
        digests: BlobDigests,
        progress: Progress,
        stop: threading.Event,
    ) -> None:
        if digests.size < SESSION_THRESHOLD:
            self._http.request(
                "POST",
                "/v1/blobs",
                params={"namespace": namespace, "digest": str(digests.blake3)},
                content=_file_chunks(file.source, 0, digests.size, progress, stop),
                headers={
                    "Content-Length": str(digests.size),
                    "Content-Type": "application/octet-stream",
                },
            )
            return
        key = self._session_key(digests)
        url = self._sessions.get(key)
        offset = 0
        if url is not None:
            try:
                state = self._http.request("GET", url).json()
            except errors.NotFound:
                state = {}
            if state.get("state") == "open":
                offset = int(state["offset"])
            else:
                url = None
        if url is None:
            response = self._http.request(
                "POST",
                "/v1/uploads",
                params={"namespace": namespace},
                headers={"Upload-Length": str(digests.size)},
            )
            url = response.headers["Location"]
            self._sessions.put(key, url)
        progress(offset)
        busy_until = time.monotonic() + BUSY_WAIT
        while offset < digests.size:
            length = min(PATCH_SIZE, digests.size - offset)
            try:
                response = self._http.request(
                    "PATCH",
                    url,
                    content=_file_chunks(file.source, offset, length, progress, stop),
                    headers={
                        "Content-Type": "application/offset+octet-stream",
                        "Content-Length": str(length),
                        "Upload-Offset": str(offset),
                    },
                )
            except errors.UploadBusy:
                # A request cut off by a crash still holds its short claim: wait it out.
                if time.monotonic() > busy_until:
                    raise
                time.sleep(1.0)
                continue
            except errors.UploadOffsetMismatch as exc:
                offset = exc.offset  # the server kept a different prefix: continue from it
                continue
            offset = int(response.headers["Upload-Offset"])
        busy_until = time.monotonic() + BUSY_WAIT
        while True:
            try:
                self._http.request(
                    "POST", f"{url}/complete", params={"digest": str(digests.blake3)}
                )
                break
            except errors.UploadBusy:
                # Completion claims the session too: a crash mid-completion leaves its claim.
                if time.monotonic() > busy_until:
                    raise
                time.sleep(1.0)
        self._sessions.put(key, None)
