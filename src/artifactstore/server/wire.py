"""The HTTP/1.1 wire protocol under uvicorn, with a bound on the request head.

uvicorn's default parser (httptools) sets no limit on the size of a request
line and its headers: a client could send megabytes of header and the server
would buffer them all (``h11_max_incomplete_event_size`` only binds the pure
Python h11 parser). :class:`BoundedHttpToolsProtocol` counts the bytes of each
request head as they arrive and answers ``431`` (a ``limit_exceeded``
problem) and closes the connection as soon as the head passes
:data:`MAX_HEAD_BYTES`, so memory stays bounded and no route ever runs.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from artifactstore.server.problems import problem_body

__all__ = ["MAX_HEAD_BYTES", "BoundedHttpToolsProtocol"]

#: Largest request head (request line plus headers) accepted, in bytes.
MAX_HEAD_BYTES = 64 * 1024


class _HeadTooLarge(Exception):
    """Raised inside the parser callback; httptools wraps it in HttpParserCallbackError."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools, refusing a request head over ``max_head_bytes`` with 431."""

    max_head_bytes = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the current request's head received so far; None between
        # the end of a head and the start of the next request.
        self._head_bytes: int | None = 0
        self._head_refused = False

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        self._head_bytes = None
        if size > self.max_head_bytes:
            self._head_refused = True
            raise _HeadTooLarge
        super().on_headers_complete()

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
        request_id = secrets.token_hex(8)
        detail = f"the request line and headers are larger than {self.max_head_bytes} bytes"
        body = json.dumps(
            problem_body(431, "limit_exceeded", "Request header fields too large", detail)
        ).encode()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
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
                    "status": 431,
                    "detail": detail,
                }
            )
        )
