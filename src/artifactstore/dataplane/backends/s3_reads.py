"""Reading S3 objects: a GetObject body read ahead of its consumer.

Serving a blob from S3 alternates between reading the response from S3 and
writing the bytes to the client; one thread doing both leaves each side idle
half the time. :class:`ReadAhead` reads on a thread of its own, at most
``READ_AHEAD`` chunks of ``READ_CHUNK`` ahead (the memory a download holds),
while the consumer sends the earlier ones; socket reads and writes release
the GIL, so the two overlap. Ranged GETs in parallel would overlap more on
AWS, but an S3 server that reads the whole object for every range (moto
does) makes them slower: one stream, read ahead, is fast on both.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError

from artifactstore.errors import StorageError

__all__ = ["READ_AHEAD", "READ_CHUNK", "ReadAhead"]

#: Bytes per chunk read from a response body.
READ_CHUNK = 1 << 20
#: Chunks read ahead of the consumer.
READ_AHEAD = 8


class ReadAhead:
    """Iterates a GetObject body while a thread reads it ``READ_AHEAD`` chunks ahead.

    Serving a blob alternates between reading from S3 and writing to the
    client; reading ahead overlaps the two (the socket reads release the GIL).
    ``stop`` ends the thread early (a client gone mid-download) and closes the body.
    """

    def __init__(self, body: Any, key: str) -> None:
        self._body = body
        self._key = key
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(READ_AHEAD)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._read, name="s3-read", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for chunk in self._body.iter_chunks(READ_CHUNK):
                if not self._put(chunk):
                    return
            self._put(None)
        except (BotoCoreError, OSError, ValueError) as exc:
            self._put(StorageError(f"reading {self._key} failed: {exc}"))
        except BaseException as exc:  # the consumer must never wait for a dead thread
            self._put(exc)
        finally:
            self._body.close()

    def _put(self, item: bytes | BaseException | None) -> bool:
        """Queue ``item`` once there is room; False once the consumer stopped."""
        while not self._stopped.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.2)
                return True
        return False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(queue.Empty):  # free the reader blocked on a full queue
            while True:
                self._queue.get_nowait()
