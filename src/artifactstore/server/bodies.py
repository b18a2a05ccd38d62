"""Request bodies into the (synchronous) data plane, and ranges out of it.

The event loop only moves bytes: it gathers the body into 1 MiB buffers and
hands each to a worker thread, where the data plane writes it and its two
hashers run. One buffer is in flight while the next one fills, so receiving,
writing and hashing overlap and memory stays at a few MiB per request.

A body must keep arriving: a pause longer than ``idle_timeout`` or a total
time past ``total_timeout`` ends the request (slow-loris defence).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio import to_thread
from starlette.requests import ClientDisconnect, Request

from artifactstore.errors import InvalidInput, LimitExceeded

__all__ = [
    "BodyTimeout",
    "ByteRange",
    "RangeNotSatisfiable",
    "Sink",
    "declared_length",
    "feed",
    "parse_range",
    "receive",
]

BUFFER = 1 << 20


class BodyTimeout(Exception):
    """The client sent its body too slowly."""


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def declared_length(request: Request, limit: int, what: str = "the upload limit") -> int | None:
    """The length the body's ``Content-Length`` declares, refused at once past ``limit``.

    None when there is no number to trust (chunked, or not digits: the HTTP
    server refuses those, and :func:`feed` enforces the limit on what arrives).
    """
    declared = request.headers.get("content-length")
    if declared is None or not (declared.isascii() and declared.isdigit()):
        return None
    if len(declared) > 19 or int(declared) > limit:
        raise LimitExceeded(f"body of {declared} bytes is over {what} of {limit}")
    return int(declared)


class Sink(Protocol):
    """Where :func:`receive` writes a body: a one-shot upload, a batch of blobs."""

    def write(self, data: bytes) -> Any: ...
    def cancel(self) -> Any: ...


async def receive(request: Request, sink: Sink, limit: int) -> bytes:
    """The body into ``sink`` (see :func:`feed`); its last buffer, not yet written, returned.

    Whatever ends the body early (a limit, a slow client, a client gone, the
    sink refusing) cancels the sink, in a thread, before the error goes on: its
    staged bytes are dropped now rather than left for the sweep.
    """
    limits = request.app.state.limits
    try:
        return await feed(
            request.stream(),
            sink.write,
            limit=limit,
            idle_timeout=limits.idle_timeout,
            total_timeout=limits.total_timeout,
            keep_tail=True,
        )
    except BaseException:
        await to_thread.run_sync(sink.cancel)
        raise


async def feed(
    stream: AsyncIterator[bytes],
    sink: Callable[[bytes], Any],
    *,
    limit: int,
    idle_timeout: float,
    total_timeout: float,
    keep_tail: bool = False,
) -> bytes:
    """Copy ``stream`` into ``sink`` (run in a thread) in 1 MiB buffers.

    Raises LimitExceeded past ``limit`` bytes (before the excess reaches the
    sink) and BodyTimeout for a slow body. Hashing runs on the data plane's
    pool threads and overlaps with receiving the next buffer. ``keep_tail``:
    the bytes after the last full buffer are returned instead of fed (the
    caller writes them in the same worker-thread hop as its finish: a small
    body then costs one hop); otherwise b"" is returned.
    """
    total = 0
    pending: list[bytes] = []
    pending_size = 0
    deadline = anyio.current_time() + total_timeout
    iterator = stream.__aiter__()
    while True:
        try:
            wait = min(idle_timeout, deadline - anyio.current_time())
            if wait <= 0:
                raise BodyTimeout("request body took too long")
            with anyio.move_on_after(wait) as scope:
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
            if scope.cancelled_caught:
                raise BodyTimeout("request body stalled")
        except (BodyTimeout, ClientDisconnect):
            # The body broke off: what arrived intact still reaches the sink, so
            # a resumable upload keeps it (tus: store as much as possible).
            if pending:
                await to_thread.run_sync(sink, b"".join(pending))
            raise
        if not chunk:
            continue
        total += len(chunk)
        if total > limit:
            raise LimitExceeded(f"request body is larger than the limit of {limit} bytes")
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= BUFFER:
            buf = b"".join(pending)
            pending, pending_size = [], 0
            await to_thread.run_sync(sink, buf)
    tail = b"".join(pending)
    if keep_tail:
        return tail
    if tail:
        await to_thread.run_sync(sink, tail)
    return b""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length - 1


_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
#: Past any representation's size; longer numbers are not converted (int() of
#: thousands of digits is slow, and refused past 4300 digits).
_HUGE = 10**19


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= 19 else _HUGE


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One RFC 9110 byte range, or None for the whole representation.

    Several ranges are refused (one range per request); a
    syntactically invalid header is ignored as RFC 9110 allows, except that
    we answer 416 for an unsatisfiable one.
    """
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        if header.strip().startswith("bytes=") and "," in header:
            raise InvalidInput("only one range per request is supported")
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        suffix = _number(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        suffix = min(suffix, size)
        return ByteRange(size - suffix, suffix)
    start = _number(first)
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = size - 1 if last == "" else min(_number(last), size - 1)
    if end < start:
        return None  # invalid: last < first -> ignore the header (RFC 9110 14.1.1)
    return ByteRange(start, end - start + 1)
