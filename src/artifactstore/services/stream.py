"""The event stream out: committed events published to NATS JetStream (docs/events.md).

The event log is the outbox (``controlplane/outbox.py``): a commit never
waits for NATS, and this publisher, run by one replica at a time (the
``events-stream`` lease of ``server/background.py``), copies the log to the
stream. Each round reads the events after the stream's cursor in ``seq``
order and publishes them with ``Nats-Msg-Id`` = their ``seq``, up to
:data:`WINDOW` in flight at once (waiting for each acknowledgement before
sending the next caps a slow link at one event per round trip: ~80/s over
10 ms). The acknowledgements are awaited in order, and the cursor moves
only past the longest acknowledged prefix. So the stream holds the log's
events in ``seq`` order, without a gap:

* nothing uncommitted: only committed rows are read;
* no gap, and so nothing missing: every message carries
  ``Nats-Expected-Last-Sequence``, the stream sequence its predecessor must
  have got (the stream's last sequence when the window started, plus the
  messages before it in the window). JetStream stores it only if the
  stream's last message is exactly that one, so when message *k* of a
  window is refused or lost, *k+1* and every later one are refused too
  (their expected sequence is never reached): what the stream gained is a
  prefix of the window. (``Nats-Expected-Last-Msg-Id`` would say the same,
  but JetStream forgets the last message id on a restart once the message is
  older than the duplicate window; the last sequence it never forgets.)
  The cursor then moves past the acknowledged prefix, and the next round
  starts after it; nothing after a refusal was stored, so nothing is skipped;
* no duplicate: a crash after an acknowledgement and before the cursor
  moved makes the next publisher send those events again, which JetStream
  drops inside its duplicate window (:data:`DUPLICATE_WINDOW`); and on
  connecting the publisher reads the stream's last message and skips what it
  already holds, so even a restart after a longer outage repeats nothing.
  A duplicate does not advance the stream's sequence, so the window's later
  expectations fail: the acknowledged prefix is recorded, and the next round
  reconnects and reads the stream's state again (:class:`_Resync`); the same
  happens if anything else published to the stream meanwhile (a publisher
  that lost its lease and did not know it yet).

NATS being down never stops the store: a failed round is logged (one line
per attempt, no traceback) and retried with a growing delay
(:data:`BACKOFF_MIN` to :data:`BACKOFF_MAX`); the backlog is published once
NATS answers again.

nats-py is asyncio-only while background jobs run on threads: the publisher
keeps one event loop on a thread of its own, where its connection lives, and
each round runs there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

import nats
from artifactstore.config import Settings
from artifactstore.controlplane import outbox
from artifactstore.controlplane.db.engine import Database
from artifactstore.model.events import Event

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "DUPLICATE_WINDOW",
    "EventPublisher",
    "event_body",
    "event_subject",
]

#: Seconds JetStream remembers message ids to drop re-publishes: far longer than a
#: crashed publisher's successor takes to resume (a lease TTL, 60 s), so a cursor
#: that lagged the stream never adds a duplicate.
DUPLICATE_WINDOW = 600.0
#: Seconds before the first retry after a failure, and the longest delay between retries.
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
#: Events read from the log, published and recorded in the cursor at a time.
BATCH = 500
#: Messages in flight (published, not yet acknowledged) at once.
WINDOW = 256
#: JetStream's error code for a message whose Nats-Expected-Last-Sequence is not the
#: stream's last sequence.
WRONG_LAST_SEQUENCE = 10071
#: Seconds a round may go on publishing before it yields (the next round continues).
ROUND_SECONDS = 2.0
#: Seconds to wait for a connection, and for JetStream to acknowledge a message.
CONNECT_TIMEOUT = 2.0
ACK_TIMEOUT = 5.0

T = TypeVar("T")


def event_subject(prefix: str, event: Event) -> str:
    """``PREFIX.<type>``: the type's dot-separated words become subject tokens."""
    return f"{prefix}.{event.type}"


def event_body(event: Event) -> bytes:
    """The event as JSON: the same document as ``GET /v1/events`` and the SSE ``data:``."""
    return json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")).encode()


class EventPublisher:
    """Copies the log to the JetStream stream of ``settings``; :meth:`run` is one round.

    Only one thread calls :meth:`run` at a time (the job's); :meth:`close`
    ends the connection and the loop's thread.
    """

    def __init__(self, db: Database, settings: Settings, logger: logging.Logger) -> None:
        self.db = db
        self.servers = list(settings.nats_servers())
        if not self.servers:
            raise ValueError("the event stream needs NATS_URL")
        self.stream = settings.nats_stream
        self.prefix = settings.nats_subject_prefix
        self.shown_url = settings.redacted_nats_url()
        self.logger = logger
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._stream_last = 0  # the stream's last sequence, as our acknowledgements left it

    # --- the job ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Publish what the stream lacks; the figures of the round ({} when it did nothing).

        Never raises: a failure (NATS or the database) is logged and retried later.
        """
        if time.monotonic() < self._retry_at:
            return {}
        try:
            figures = self._call(self._round())
        except Exception as exc:
            self._failed(exc)
            return {}
        if self._failures:
            self._log(logging.INFO, "recovered", failures=self._failures)
            self._failures = 0
        return figures

    def close(self) -> None:
        """Close the connection and stop the loop's thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._disconnect(), timeout=CONNECT_TIMEOUT + 1)
        except Exception as exc:  # closing a broken connection: nothing to keep
            self._log(logging.DEBUG, "close_failed", error=_error(exc))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CONNECT_TIMEOUT + 1)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    # --- a round, on the loop ---------------------------------------------------------

    async def _round(self) -> dict[str, Any]:
        js = self._js if self._nc is not None and self._nc.is_connected else None
        if js is None:
            js = await self._connect()
        backlog = await asyncio.to_thread(outbox.backlog, self.db, self.stream)
        cursor = backlog.published
        published = duplicates = 0
        started = time.monotonic()
        while cursor < backlog.head and time.monotonic() - started < ROUND_SECONDS:
            batch = await asyncio.to_thread(outbox.pending, self.db, cursor, BATCH)
            if not batch:
                break
            acked = cursor
            try:
                for first in range(0, len(batch), WINDOW):
                    async for event, ack in self._window(js, batch[first : first + WINDOW]):
                        acked = event.seq
                        published += 1
                        duplicates += bool(ack.duplicate)
            except _Resync:
                self._js = None  # the next round reconnects and reads the stream again
                break
            finally:
                if acked > cursor:  # what was acknowledged stays recorded, even after a failure
                    cursor = await asyncio.to_thread(outbox.advance, self.db, self.stream, acked)
        if not published:
            return {}
        left = max(0, backlog.head - cursor)
        return {"published": published, "duplicates": duplicates, "cursor": cursor, "left": left}

    async def _window(
        self, js: JetStreamContext, events: list[Event]
    ) -> AsyncIterator[tuple[Event, PubAck]]:
        """Publish ``events`` all at once, then yield each with its acknowledgement, in order.

        The first failure ends the window; the messages still in flight after
        it cannot be stored (their expected last sequence is never reached) and
        are dropped. Raises :class:`_Resync` when the stream's sequence is not
        what the window assumed (a duplicate, or a publisher not us).
        """
        base = self._stream_last
        flying: list[asyncio.Future[PubAck]] = []
        try:
            for i, event in enumerate(events):
                future = await js.publish_async(
                    event_subject(self.prefix, event),
                    event_body(event),
                    wait_stall=ACK_TIMEOUT,
                    stream=self.stream,
                    headers={
                        "Nats-Msg-Id": str(event.seq),
                        "Nats-Expected-Last-Sequence": str(base + i),
                    },
                )
                flying.append(future)
            for i, (event, future) in enumerate(zip(events, flying, strict=True)):
                try:
                    ack = await asyncio.wait_for(future, ACK_TIMEOUT)
                except APIError as exc:
                    if exc.err_code == WRONG_LAST_SEQUENCE:
                        raise _Resync from exc
                    raise
                if ack.duplicate:
                    # Stored before: the stream's sequence did not move, so every
                    # later expectation of this window is off by one.
                    yield event, ack
                    raise _Resync
                if ack.seq != base + i + 1:
                    raise _Resync
                self._stream_last = ack.seq
                yield event, ack
        finally:
            for future in flying:
                future.cancel()  # no-op once done; frees the publish slots of the rest

    async def _connect(self) -> JetStreamContext:
        """Connect, create the stream if absent, and skip what the stream already holds."""
        await self._disconnect()
        # One try per server (nats-py's 0 attempts means "forever", even with
        # reconnects off); a lost connection fails the round, and the next one
        # connects afresh after the backoff. The outer bound is for a server that
        # accepts the socket and then says nothing.
        nc = await asyncio.wait_for(
            nats.connect(
                servers=self.servers,
                connect_timeout=CONNECT_TIMEOUT,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=_ignore,  # failures reach us as exceptions, and we log them
                name="artifactstore-events",
            ),
            CONNECT_TIMEOUT * (len(self.servers) + 1),
        )
        self._nc = nc
        js = nc.jetstream(timeout=ACK_TIMEOUT)
        try:
            info = await js.stream_info(self.stream)
            created = False
        except NotFoundError:
            info = await js.add_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=[f"{self.prefix}.>"],
                    storage=StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW,
                    description="artifact-store event log (docs/events.md)",
                )
            )
            created = True
        last_seq = info.state.last_seq
        self._stream_last = last_seq
        backlog = await asyncio.to_thread(outbox.backlog, self.db, self.stream)
        held = await self._last_published(js, last_seq)
        cursor = backlog.published
        if last_seq == 0 and cursor > 0:
            # A stream that never held a message (new, or recreated): it gets the
            # whole log, so that a consumer of it misses nothing committed.
            cursor = await asyncio.to_thread(outbox.rewind, self.db, self.stream, 0)
        elif held is not None and held > cursor:
            # Acknowledged before a crash that forgot to record it: not sent again.
            cursor = await asyncio.to_thread(outbox.advance, self.db, self.stream, held)
        self._js = js
        self._log(
            logging.INFO,
            "connected",
            nats=self.shown_url,
            stream=self.stream,
            created=created,
            stream_last_seq=last_seq,
            stream_last_event=held,
            cursor=cursor,
            head=backlog.head,
        )
        return js

    async def _last_published(self, js: JetStreamContext, last_seq: int) -> int | None:
        """Our ``seq`` of the stream's last message (its ``Nats-Msg-Id``); None if unknown."""
        if last_seq == 0:
            return None
        try:
            msg = await js.get_msg(self.stream, seq=last_seq)
        except NotFoundError:  # removed by the stream's limits: the cursor decides
            return None
        text = (msg.headers or {}).get("Nats-Msg-Id", "")
        return int(text) if text.isascii() and text.isdigit() else None

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):  # a broken connection: nothing to keep
                await asyncio.wait_for(nc.close(), CONNECT_TIMEOUT)

    # --- plumbing ---------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the publisher's loop (started on first use) and wait for it."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="artifactstore-nats", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(self._failures - 1, 16))
        delay *= random.uniform(0.8, 1.0)  # replicas that failed together retry apart
        self._retry_at = time.monotonic() + delay
        try:
            self._call(self._disconnect(), timeout=CONNECT_TIMEOUT + 1)
        except Exception:  # the next round connects afresh anyway
            self._nc = self._js = None
        self._log(
            logging.WARNING,
            "unavailable",
            nats=self.shown_url,
            stream=self.stream,
            error=_error(exc),
            failures=self._failures,
            retry_in=round(delay, 2),
        )

    def _log(self, level: int, status: str, **fields: Any) -> None:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event": "event_stream",
            "status": status,
            **fields,
        }
        self.logger.log(level, json.dumps(line, default=str))


class _Resync(Exception):
    """The stream's sequence is not what the window assumed: record the acknowledged
    prefix and read the stream's state again (a new connection, next round)."""


async def _ignore(_exc: Exception) -> None:
    """nats-py's error callback: its own logging would repeat ours with a traceback."""


def _error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
