"""The HTTP/1.1 wire protocol under uvicorn: a bound on the request head, zero-copy files.

uvicorn's default parser (httptools) sets no limit on the size of a request
line and its headers: a client could send megabytes of header and the server
would buffer them all (``h11_max_incomplete_event_size`` only binds the pure
Python h11 parser). :class:`BoundedHttpToolsProtocol` counts the bytes of each
request head as they arrive and answers ``431`` (a ``limit_exceeded``
problem) and closes the connection as soon as the head passes
:data:`MAX_HEAD_BYTES`, so memory stays bounded and no route ever runs.

Nor does uvicorn bound the time a request head may take: its keep-alive
timeout starts only after a response, so a connection that sends nothing, or
half a request line, would be held forever (and enough of them exhaust the
process's descriptors). The protocol gives every head
:attr:`~BoundedHttpToolsProtocol.header_timeout` seconds from the moment it
may start (the connection opened, or the previous response ended): a silent
connection is then closed, a half-sent head gets ``408`` (a ``header_timeout``
problem) and is closed.

uvicorn has no ``http.response.pathsend`` (the ASGI extension granian
implements), so a FileResponse read the file in 1 MiB pieces on worker
threads and copied each through the event loop. The protocol advertises the
extension and answers it with ``os.sendfile``: the kernel moves the bytes from
the page cache to the socket. See :func:`_send_path` for how that stays safe
beside the event loop that owns the socket.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import secrets
import select
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from artifactstore.server.problems import problem_body

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "MAX_HEAD_BYTES",
    "SEND_IDLE_TIMEOUT",
    "BoundedHttpToolsProtocol",
]

#: Largest request head (request line plus headers) accepted, in bytes.
MAX_HEAD_BYTES = 64 * 1024
#: Seconds a request head may take unless ``Settings.header_timeout`` says otherwise.
DEFAULT_HEADER_TIMEOUT = 20.0
#: Seconds a zero-copy send waits for a client that reads nothing before it drops it.
SEND_IDLE_TIMEOUT = 60.0
#: Zero-copy sends running at once per process; more wait their turn. Each holds a
#: thread for as long as its client takes to read, so they get threads of their own
#: and slow readers never starve the worker threads that routes run on.
SEND_THREADS = 64
#: Bytes per sendfile call (as Go's net/http): a stop is noticed between calls.
_SEND_PIECE = 4 << 20
_PATHSEND = "http.response.pathsend"
_Send = Callable[[Any], Coroutine[Any, Any, None]]


class _HeadTooLarge(Exception):
    """Raised inside the parser callback; httptools wraps it in HttpParserCallbackError."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools, refusing a request head over ``max_head_bytes`` with 431 and one
    slower than ``header_timeout`` seconds with 408."""

    max_head_bytes = MAX_HEAD_BYTES
    #: Seconds a request head may take (``Settings.header_timeout``: ``app_from_env``
    #: sets it in each worker process before the first connection).
    header_timeout = DEFAULT_HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the current request's head received so far; None between
        # the end of a head and the start of the next request.
        self._head_bytes: int | None = 0
        self._head_refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next head may start now, unless a pipelined request is already running.
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._await_head()

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        """No whole head within ``header_timeout``: 408 if part of one came, then close."""
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes:
            self._head_refused = True
            self._send_problem(
                b"408 Request Timeout",
                "header_timeout",
                "Request header timeout",
                f"the request line and headers did not arrive within {self.header_timeout:g} s",
            )
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()
        if self.scheme == "http":  # sendfile would skip TLS (uvicorn sets it per connection)
            self.scope["extensions"] = {_PATHSEND: {}}

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        self._head_bytes = None
        if size > self.max_head_bytes:
            self._head_refused = True
            raise _HeadTooLarge
        super().on_headers_complete()
        cycle = self.cycle
        if self.scheme == "http" and cycle is not None and cycle.scope is self.scope:
            # run_asgi hands the app ``self.send`` when the task first runs, so an
            # instance attribute set now is what the app gets.
            cycle.send = _pathsend_aware(cycle, cycle.send)  # type: ignore[method-assign,assignment]

    def data_received(self, data: bytes) -> None:
        if self._head_refused:
            return
        super().data_received(data)
        if self._head_bytes is None or self._head_refused or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._head_refused = True
            self._send_431()

    def send_400_response(self, msg: str) -> None:
        if self._head_refused:
            self._send_431()
            return
        super().send_400_response(msg)

    def _send_431(self) -> None:
        self._stop_head_timer()
        self._send_problem(
            b"431 Request Header Fields Too Large",
            "limit_exceeded",
            "Request header fields too large",
            f"the request line and headers are larger than {self.max_head_bytes} bytes",
        )

    def _send_problem(self, status: bytes, code: str, title: str, detail: str) -> None:
        """Answer a problem before any route ran, log it, and close the connection."""
        request_id = secrets.token_hex(8)
        number = int(status.split()[0])
        body = json.dumps(problem_body(number, code, title, detail)).encode()
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"x-request-id: " + request_id.encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
        logging.getLogger("artifactstore.access").info(
            json.dumps(
                {
                    "request_id": request_id,
                    "method": "",
                    "path": "",
                    "route": "unmatched",
                    "status": number,
                    "detail": detail,
                }
            )
        )


@functools.cache
def _senders() -> ThreadPoolExecutor:
    """The process's pool of zero-copy senders, made on the first file sent (on the loop)."""
    return ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="sendfile")


def _pathsend_aware(cycle: RequestResponseCycle, send: _Send) -> _Send:
    async def send_or_sendfile(message: Any) -> None:
        if message["type"] != _PATHSEND:
            await send(message)
            return
        if cycle.disconnected:  # as uvicorn's send: the start was dropped too
            return
        if not cycle.response_started or cycle.response_complete:
            raise RuntimeError(f"unexpected ASGI message {_PATHSEND!r}")
        if cycle.chunked_encoding:  # the file's length must be known before its bytes
            raise RuntimeError(f"{_PATHSEND!r} needs a Content-Length header")
        pending = cycle.scope["method"] != "HEAD" and cycle.expected_content_length > 0
        if pending and not await _send_path(cycle, message["path"]):
            return
        cycle.expected_content_length = 0
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return send_or_sendfile


async def _send_path(cycle: RequestResponseCycle, path: str) -> bool:
    """Send the response body from ``path`` with ``os.sendfile``; False if the client went.

    The event loop owns the socket, so the copy runs on a thread of its own
    over a duplicate of the descriptor: should the loop close the connection
    meanwhile, the number cannot be reused under the thread for another
    client's socket. Nothing else writes to the transport while the app awaits
    this send; the headers the transport still buffers go out first.
    """
    transport = cycle.transport
    waited = 0.0
    while transport.get_write_buffer_size() and not transport.is_closing():
        if waited > SEND_IDLE_TIMEOUT:
            return _drop(cycle)
        await asyncio.sleep(0.005)
        waited += 0.005
    if transport.is_closing():
        return _drop(cycle)
    out = os.dup(transport.get_extra_info("socket").fileno())
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    try:
        sent = await loop.run_in_executor(
            _senders(), _sendfile, out, path, cycle.expected_content_length, stop
        )
    except asyncio.CancelledError:
        stop.set()
        raise
    except OSError:  # the client reset or stopped reading: like a write to a lost peer
        return _drop(cycle)
    if sent < cycle.expected_content_length:
        transport.close()
        raise RuntimeError(f"{path} ended after {sent} of {cycle.expected_content_length} bytes")
    return True


def _drop(cycle: RequestResponseCycle) -> bool:
    """Close a connection whose client went away mid-body, as uvicorn does for a lost peer.

    ``disconnected`` is what ``connection_lost`` would set on the next turn of
    the loop; set now, it tells ``run_asgi`` the response ended with its
    client instead of with an error of the app.
    """
    cycle.disconnected = True
    cycle.transport.close()
    return False


def _sendfile(out: int, path: str, count: int, stop: threading.Event) -> int:
    """Copy ``count`` bytes of ``path`` to the non-blocking socket ``out``, then close ``out``.

    The thread owns ``out``: a cancelled send sets ``stop`` and leaves the
    closing to this function, which checks ``stop`` at least every 0.5 s.
    """
    try:
        poller = select.poll()
        poller.register(out, select.POLLOUT)
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:  # the server's fault, not the client's: not an OSError here
            raise RuntimeError(f"cannot open {path} to send it: {exc.strerror}") from exc
        with f:
            offset = 0
            idle = 0.0
            while offset < count and not stop.is_set():
                try:
                    n = os.sendfile(out, f.fileno(), offset, min(count - offset, _SEND_PIECE))
                except BlockingIOError:
                    if poller.poll(500):
                        idle = 0.0
                        continue
                    idle += 0.5
                    if idle >= SEND_IDLE_TIMEOUT:
                        raise TimeoutError(f"the client read nothing for {idle:.0f} s") from None
                    continue
                if n == 0:  # the file is shorter than its Content-Length
                    break
                offset += n
            return offset
    finally:
        os.close(out)
