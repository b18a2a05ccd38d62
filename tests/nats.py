"""NATS JetStream for the event stream tests: a stream of the test's own, read back whole.

The server is the one ``TEST_NATS_URL`` names (default: the local one on
127.0.0.1:4222, JetStream on). Each test gets a stream and a subject prefix
with random names (settings ``NATS_STREAM`` and ``NATS_SUBJECT_PREFIX``), so
tests running at once, here or in another checkout, never see each other's
events; the stream is deleted afterwards.

Where the server cannot be reached (or has no JetStream) the tests that need it
skip, saying why; under CI (``CI`` set) they fail instead, as ``tests/pg.py`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from nats.js.errors import NotFoundError

import nats

__all__ = [
    "NATS_URL",
    "Published",
    "StreamUnderTest",
    "stream_under_test",
    "unreachable",
]

NATS_URL = os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222")

T = TypeVar("T")


def unreachable(reason: str) -> None:
    """Skip (or, under CI, fail) a test that needs NATS JetStream, saying why."""
    message = f"NATS JetStream at {NATS_URL} (TEST_NATS_URL) is not reachable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this fails instead of skipping)")
    pytest.skip(message)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass(frozen=True)
class Published:
    """One message of the stream as a consumer sees it."""

    stream_seq: int
    subject: str
    msg_id: str | None
    body: dict[str, Any]


@dataclass(frozen=True)
class StreamUnderTest:
    url: str
    stream: str
    prefix: str

    def env(self, url: str | None = None) -> dict[str, str]:
        """The ``serve`` settings that publish to this stream (through ``url`` if given)."""
        return {
            "ARTIFACTSTORE_NATS_URL": url or self.url,
            "ARTIFACTSTORE_NATS_STREAM": self.stream,
            "ARTIFACTSTORE_NATS_SUBJECT_PREFIX": self.prefix,
        }

    def overrides(self) -> dict[str, Any]:
        """The same settings as ``Store.open`` keywords."""
        return {
            "nats_url": self.url,
            "nats_stream": self.stream,
            "nats_subject_prefix": self.prefix,
        }

    def messages(self) -> list[Published]:
        """Every message the stream holds, in stream order ([] if it does not exist)."""
        return run(self._messages())

    async def _messages(self) -> list[Published]:
        nc = await nats.connect(self.url, connect_timeout=5, allow_reconnect=False)
        try:
            js = nc.jetstream(timeout=10)
            try:
                info = await js.stream_info(self.stream)
            except NotFoundError:
                return []
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                if seq == 0:
                    continue
                msg = await js.get_msg(self.stream, seq=seq)
                assert msg.data is not None and msg.subject is not None
                out.append(
                    Published(
                        seq,
                        msg.subject,
                        (msg.headers or {}).get("Nats-Msg-Id"),
                        json.loads(msg.data),
                    )
                )
            return out
        finally:
            await nc.close()

    def delete(self) -> None:
        async def go() -> None:
            nc = await nats.connect(self.url, connect_timeout=5, allow_reconnect=False)
            try:
                with contextlib.suppress(NotFoundError):
                    await nc.jetstream().delete_stream(self.stream)
            finally:
                await nc.close()

        run(go())


async def _quiet(_exc: Exception) -> None:
    """nats-py's error callback: the skip reason says what failed."""


async def _check(url: str) -> None:
    # One attempt (nats-py's 0 means "retry forever"), bounded as a whole.
    nc = await asyncio.wait_for(
        nats.connect(
            url,
            connect_timeout=3,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=_quiet,
        ),
        10,
    )
    try:
        await nc.jetstream(timeout=5).account_info()
    finally:
        await nc.close()


@contextlib.contextmanager
def stream_under_test() -> Iterator[StreamUnderTest]:
    """A stream name and subject prefix of the caller's own (the stream is deleted after)."""
    try:
        run(_check(NATS_URL))
    except Exception as exc:
        unreachable(f"{type(exc).__name__}: {exc}")
    token = secrets.token_hex(5)
    under_test = StreamUnderTest(NATS_URL, f"TEST_EVENTS_{token}", f"test.{token}.events")
    try:
        yield under_test
    finally:
        under_test.delete()
