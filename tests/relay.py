"""A TCP relay on a loopback port, for tests that cut a connection and bring it back.

The test's server (PostgreSQL, NATS) stays up for everyone else; only what
goes through the relay is cut (``tests/test_outages.py``,
``tests/test_stream_nats.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Literal

__all__ = ["Mode", "Relay"]

Mode = Literal["up", "refuse", "blackhole"]


class Relay:
    """A TCP forwarder on a free loopback port to ``target``, run on an event loop in a
    thread of the test process, whose link the test cuts and restores.

    ``refuse``: new connections are reset at once, open ones are reset (a server
    that went down). ``blackhole``: new connections are accepted and never
    answered, open ones stop forwarding in both directions (a host that
    vanished from the network). ``up``: forwarding again; connections that lived
    through a blackhole are reset, as a real peer would after losing their bytes.
    ``delay``: seconds each chunk from the server waits before it is passed on (a
    slow network: answers take longer).
    """

    def __init__(self, host: str, port: int, *, delay: float = 0.0) -> None:
        self.target = (host, port)
        self.delay = delay
        self.mode: Mode = "up"
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop
        ).result(10)
        self._server = server
        self.port: int = server.sockets[0].getsockname()[1]

    def set(self, mode: Mode) -> None:
        """Switch the link; returns once open connections are dealt with."""

        async def switch() -> None:
            self.mode = mode
            if mode != "blackhole":
                for writer in list(self._open):
                    _reset(writer)
                self._open.clear()

        asyncio.run_coroutine_threadsafe(switch(), self._loop).result(10)

    def close(self) -> None:
        self.set("refuse")

        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            _reset(writer)
            return
        self._open.add(writer)
        if self.mode == "blackhole":
            return  # held open, never answered, until the link changes
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._open.discard(writer)
            _reset(writer)
            return
        self._open.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer, 0.0),
            self._pipe(up_reader, writer, self.delay),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        try:
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                if self.mode != "up":
                    continue  # blackholed: the bytes vanish
                writer.write(data)
                await writer.drain()
        finally:
            self._open.discard(writer)
            writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a host whose server process died does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
