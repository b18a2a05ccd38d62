"""The event stream out to NATS JetStream (SPEC section 8 "Stream out", docs/events.md).

Real NATS (``tests/nats.py``): each test publishes to a stream and subject
prefix of its own. The library tests drive the publisher's rounds by hand;
the server tests run ``artifactstore serve`` with ``NATS_URL``, the crash
trials SIGKILL it at random instants while a client commits, and the outage
test cuts NATS off behind a TCP relay and brings it back.

``ARTIFACTSTORE_STREAM_CRASH_TRIALS`` (default 20) sets the crash trials;
``ARTIFACTSTORE_STREAM_CRASH_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import blake3
import httpx
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamConfig
from sqlalchemy import text

import nats
from artifactstore.config import Settings
from artifactstore.controlplane import eventlog, outbox
from artifactstore.errors import InvalidSetting
from artifactstore.model.events import Event
from artifactstore.model.package_events import SchemaRegistered
from artifactstore.server.background import Background, PeriodicJob
from artifactstore.services.stream import EventPublisher
from artifactstore.store import Store
from tests.conftest import ARTIFACTSTORE, make_tree
from tests.nats import Published, StreamUnderTest, stream_under_test
from tests.relay import Relay
from tests.server.conftest import Server, serving, upload_blob

TRIALS = int(os.environ.get("ARTIFACTSTORE_STREAM_CRASH_TRIALS", "20"))
SEED = int(os.environ.get("ARTIFACTSTORE_STREAM_CRASH_SEED") or random.randrange(2**32))
WAIT = 30.0  # generous: two cores shared by several test runs

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def nats_stream() -> Iterator[StreamUnderTest]:
    with stream_under_test() as under_test:
        yield under_test


@pytest.fixture
def logger() -> logging.Logger:
    return logging.getLogger("test.stream")


def _store(home: Path, stream: StreamUnderTest, **overrides: Any) -> Store:
    return Store.open(home, **{**stream.overrides(), **overrides})


def _commit_some(store: Store, tmp: Path, tag: str) -> None:
    """A few commits of different kinds: several event types, several subjects."""
    src = make_tree(tmp / f"src-{tag}", {"a.txt": f"a {tag}".encode(), "b/c.bin": os.urandom(64)})
    store.push(f"ci/app:{tag}", [src])
    store.register_schema(f"test.{tag}.v1", {"type": "object"})
    store.place_hold(f"ci/app:{tag}", "audit")


def _drain(publisher: EventPublisher, store: Store) -> None:
    """Run rounds until the stream has every committed event."""
    deadline = time.monotonic() + WAIT
    while store.stream_backlog().unpublished and time.monotonic() < deadline:
        publisher.run()
        time.sleep(0.01)
    assert store.stream_backlog().unpublished == 0, "the publisher did not catch up"


@contextlib.contextmanager
def _publishing(store: Store, logger: logging.Logger) -> Iterator[EventPublisher]:
    """The store's publisher, closed afterwards; the test runs its rounds."""
    publisher = store.event_publisher(logger)
    try:
        yield publisher
    finally:
        publisher.close()


def _publish_all(store: Store, logger: logging.Logger) -> None:
    """A publisher of its own runs until the stream has every committed event."""
    with _publishing(store, logger) as publisher:
        _drain(publisher, store)


#: One message as :func:`_stream` and :func:`_as_published` give it:
#: (``Nats-Msg-Id``, subject, our seq, body).
Message = tuple[str | None, str, int, Any]


def _stream(messages: list[Published], *, offset: int = 0) -> list[Message]:
    """The stream's messages after ``offset`` other ones, each with its stream seq less
    the offset (which must be our seq)."""
    return [(m.msg_id, m.subject, m.stream_seq - offset, m.body) for m in messages[offset:]]


def _as_published(events: list[Event], prefix: str) -> list[Message]:
    """The log as the stream must hold it: each event once, in seq order, its seq as the
    message id, subject ``PREFIX.<type>``, body the JSON of ``GET /v1/events``."""
    return [(str(e.seq), f"{prefix}.{e.type}", e.seq, e.to_json()) for e in events]


# --- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("", ()),
        ("nats://127.0.0.1:4222", ("nats://127.0.0.1:4222",)),
        ("nats://a:4222, tls://b:4222", ("nats://a:4222", "tls://b:4222")),
        ("wss://user:pw@nats.example", ("wss://user:pw@nats.example",)),
    ],
)
def test_nats_urls_accepted(url: str, servers: tuple[str, ...]) -> None:
    assert Settings.load(env={}, nats_url=url).nats_servers() == servers


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:4222", "127.0.0.1:4222", "nats://", "nats://a:4222,redis://b"]
)
def test_a_nats_url_of_another_scheme_is_a_setting_error(url: str) -> None:
    with pytest.raises(InvalidSetting, match="NATS_URL"):
        Settings.load(env={}, nats_url=url)


def test_bad_stream_names_are_setting_errors() -> None:
    with pytest.raises(InvalidSetting, match="NATS_STREAM"):
        Settings.load(env={}, nats_stream="a.b")
    with pytest.raises(InvalidSetting, match="NATS_SUBJECT_PREFIX"):
        Settings.load(env={}, nats_subject_prefix="events.>")


def test_the_logged_nats_url_hides_passwords_and_tokens() -> None:
    settings = Settings.load(env={}, nats_url="nats://me:secret@a:4222,nats://tok3n@b:4222")
    shown = settings.redacted_nats_url()
    assert "secret" not in shown and "tok3n" not in shown
    assert shown == "nats://me:***@a:4222,nats://***@b:4222"


# --- the library: the publisher's rounds ------------------------------------------------


@pytest.mark.configs("embedded", "scaleout")
def test_every_committed_event_arrives_once_in_seq_order(
    tmp_path: Path,
    nats_stream: StreamUnderTest,
    logger: logging.Logger,
    database_url: str | None,
) -> None:
    with _store(tmp_path / "home", nats_stream, database_url=database_url) as store:
        _commit_some(store, tmp_path, "1.0")
        with _publishing(store, logger) as publisher:
            _drain(publisher, store)
            _commit_some(store, tmp_path, "2.0")
            _drain(publisher, store)
            for _ in range(3):  # rounds with nothing new publish nothing
                assert publisher.run() == {}
        events = store.events()
    assert len(events) >= 8
    assert {e.type for e in events} >= {"package.committed", "schema.registered", "hold.placed"}
    assert _stream(nats_stream.messages()) == _as_published(events, nats_stream.prefix)


@pytest.mark.configs("embedded", "scaleout")
def test_a_cursor_that_lagged_the_stream_republishes_nothing(
    tmp_path: Path,
    nats_stream: StreamUnderTest,
    logger: logging.Logger,
    database_url: str | None,
) -> None:
    """A crash between JetStream's ack and the cursor update, long after: the stream's
    duplicate window (here 0.5 s, made by an operator) has passed, so only the
    publisher's look at the stream's last message keeps the events from doubling."""
    asyncio.run(_add_stream(nats_stream, duplicate_window=0.5))
    with _store(tmp_path / "home", nats_stream, database_url=database_url) as store:
        _commit_some(store, tmp_path, "1.0")
        _publish_all(store, logger)
        head = store.stream_backlog().head
        # The cursor as a crash right after the acks leaves it: not moved at all.
        outbox.rewind(store.db, nats_stream.stream, 0)
        assert store.stream_backlog().unpublished == head
        time.sleep(1.0)  # past the duplicate window
        _commit_some(store, tmp_path, "2.0")
        _publish_all(store, logger)
        events = store.events()
    assert _stream(nats_stream.messages()) == _as_published(events, nats_stream.prefix)


@pytest.mark.configs("embedded", "scaleout")
def test_a_stream_recreated_empty_gets_the_whole_log(
    tmp_path: Path,
    nats_stream: StreamUnderTest,
    logger: logging.Logger,
    database_url: str | None,
) -> None:
    with _store(tmp_path / "home", nats_stream, database_url=database_url) as store:
        _commit_some(store, tmp_path, "1.0")
        with _publishing(store, logger) as publisher:
            _drain(publisher, store)
            nats_stream.delete()
            publisher.close()  # a new connection: the publisher looks at the stream again
            _commit_some(store, tmp_path, "2.0")
            _drain(publisher, store)
        events = store.events()
    assert _stream(nats_stream.messages()) == _as_published(events, nats_stream.prefix)


def test_a_consumer_resumes_after_any_seq(
    tmp_path: Path, nats_stream: StreamUnderTest, logger: logging.Logger
) -> None:
    """In a stream that held other messages first, stream seq = our seq + an offset
    that the first event's ``Nats-Msg-Id`` gives (docs/events.md)."""
    asyncio.run(_add_stream(nats_stream, foreign=2))
    with _store(tmp_path / "home", nats_stream) as store:
        _commit_some(store, tmp_path, "1.0")
        _publish_all(store, logger)
        events = store.events()
    on_stream = _stream(nats_stream.messages(), offset=2)
    assert on_stream == _as_published(events, nats_stream.prefix)
    last = events[-1].seq
    for after in sorted({0, 1, last // 2, last - 1, last}):
        got = asyncio.run(_consume_after(nats_stream, after, last))
        assert got == [e.to_json() for e in events if e.seq > after], after


async def _add_stream(
    under_test: StreamUnderTest,
    *,
    duplicate_window: float = 0,
    foreign: int = 0,
    max_msg_size: int | None = None,
    update: bool = False,
) -> None:
    """The stream as an operator made it before the store published to it (``update``:
    as the operator changes it afterwards)."""
    nc = await nats.connect(under_test.url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=10)
        config = StreamConfig(name=under_test.stream, subjects=[f"{under_test.prefix}.>"])
        if duplicate_window:
            config.duplicate_window = duplicate_window
        config.max_msg_size = max_msg_size
        if update:
            await js.update_stream(config)
            return
        await js.add_stream(config)
        for i in range(foreign):
            await js.publish(f"{under_test.prefix}.hello", json.dumps({"hello": i}).encode())
    finally:
        await nc.close()


async def _consume_after(under_test: StreamUnderTest, after: int, last: int) -> list[Any]:
    """What a consumer that processed our seq ``after`` reads next, as docs/events.md
    says: find the offset, start the consumer at stream seq ``after + 1 + offset``."""
    nc = await nats.connect(under_test.url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(under_test.stream)
        offset = None
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(under_test.stream, seq=seq)
            msg_id = (msg.headers or {}).get("Nats-Msg-Id")
            if msg_id is not None and msg_id.isdigit():
                offset = seq - int(msg_id)
                break
        assert offset is not None
        if after >= last:
            return []
        sub = await js.pull_subscribe(
            f"{under_test.prefix}.>",
            stream=under_test.stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1 + offset
            ),
        )
        out: list[Any] = []
        while len(out) < last - after:
            for delivered in await sub.fetch(last - after - len(out), timeout=10):
                assert delivered.headers is not None
                body = json.loads(delivered.data)
                assert delivered.headers["Nats-Msg-Id"] == str(body["seq"])
                out.append(body)
                await delivered.ack()
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def test_a_quiet_job_logs_only_runs_that_did_something_and_is_closed_at_stop(
    tmp_path: Path,
) -> None:
    """The wiring the publisher relies on (``server/background.py``): its own lease TTL,
    no log line for an idle round, ``close`` once its thread has ended."""
    runs: list[int] = []
    closed: list[bool] = []
    lines: list[str] = []

    def run() -> dict[str, Any]:
        runs.append(len(runs))
        return {"published": 1} if len(runs) == 3 else {}

    job_logger = logging.getLogger(f"test.quiet.{os.getpid()}.{id(runs)}")
    job_logger.propagate = False
    job_logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    job_logger.addHandler(handler)
    job = PeriodicJob(
        "quiet", 0.02, run, quiet=True, close=lambda: closed.append(True), lease_ttl=2.0
    )
    with Store.open(tmp_path / "home") as store:
        background = Background(store, [job], job_logger)
        background.start()
        try:
            _wait(lambda: len(runs) >= 8, "eight runs")
            with store.db.read() as conn:
                expires = conn.execute(text("SELECT expires_at FROM leases")).scalar_one()
            assert expires - time.time() <= 2.0  # the job's TTL, not the default minute
        finally:
            background.stop()
    oks = [json.loads(x) for x in lines if '"status": "ok"' in x]
    assert [x["published"] for x in oks] == [1]
    assert closed == [True]


# --- serve: the publisher as a background job ------------------------------------------


def _wait(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - began


def _wait_drained(backlog: Callable[[], float], what: str, stall: float = WAIT) -> None:
    """Wait until ``backlog`` reaches 0, failing only when it stops shrinking for ``stall``
    seconds: the publisher sends one event per acknowledgement (about 80/s through the
    relay's 10 ms), so a seed whose kills left thousands behind needs longer than WAIT."""
    least, since = backlog(), time.monotonic()
    while least > 0:
        if time.monotonic() - since > stall:
            pytest.fail(f"{what} stalled at {least:g} unpublished")
        time.sleep(0.2)
        now = backlog()
        if now < least:
            least, since = now, time.monotonic()


def _log_events(client: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        after = out[-1]["seq"] if out else 0
        page = client.get("/v1/events", params={"after": after, "limit": 1000}).json()
        if not page["events"]:
            return out
        out += page["events"]


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def _schemas(store: Store, tag: str, count: int, *, pad: int = 0) -> None:
    """``count`` schema.registered events in one transaction (``pad``: bytes of filler in
    each schema, to make its message that much larger)."""
    items = []
    for i in range(count):
        schema: dict[str, Any] = {"type": "object", "description": "x" * pad}
        text_form = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        digest = "blake3:" + blake3.blake3(text_form.encode()).hexdigest()
        items.append(SchemaRegistered(f"test.{tag}{i}.v1", schema, digest))
    with store.db.write() as conn:
        eventlog.append_many(conn, items, "test")


@pytest.mark.configs("embedded")
def test_a_refused_message_ends_the_stream_at_the_events_before_it(
    tmp_path: Path, nats_stream: StreamUnderTest, logger: logging.Logger
) -> None:
    """With many messages in flight, one JetStream refuses (too large for the stream)
    must not let the ones after it in: their expected last sequence is never reached.
    The stream stops right before it, the cursor with it; once the operator allows
    larger messages, the rest follows, each once."""
    asyncio.run(_add_stream(nats_stream, max_msg_size=4096))
    with _store(tmp_path / "home", nats_stream) as store:
        _schemas(store, "before", 40)
        big_seq = store.stream_backlog().head + 1
        _schemas(store, "big", 1, pad=8192)
        _schemas(store, "after", 300)
        with _publishing(store, logger) as publisher:
            deadline = time.monotonic() + 5
            while store.stream_backlog().published < big_seq - 1:
                assert time.monotonic() < deadline, "the events before the big one never went"
                publisher.run()
                time.sleep(0.05)
            for _ in range(10):  # rounds that try the big one again (after their backoff)
                publisher.run()
                time.sleep(0.1)
            events = store.events()
            assert store.stream_backlog().published == big_seq - 1
            held = _stream(nats_stream.messages())
            assert held == _as_published(events[: big_seq - 1], nats_stream.prefix)
            asyncio.run(_add_stream(nats_stream, max_msg_size=-1, update=True))
            _drain(publisher, store)
    assert _stream(nats_stream.messages()) == _as_published(events, nats_stream.prefix)


@pytest.mark.configs("embedded")
def test_a_slow_link_carries_far_more_than_one_event_per_round_trip(
    tmp_path: Path, nats_stream: StreamUnderTest, logger: logging.Logger
) -> None:
    """2,000 events over a relay that delays every answer by 10 ms: one acknowledged
    publish at a time would take over 20 s; with a window in flight it takes a few.
    (The figure is ``bench/scale.py --only stream``'s; this only bounds it loosely.)"""
    relay = _relay(nats_stream, delay=0.01)
    try:
        env = {"nats_url": _through(relay)}
        with _store(tmp_path / "home", nats_stream, **env) as store:
            _schemas(store, "bulk", 2000)
            with _publishing(store, logger) as publisher:
                started = time.monotonic()
                _drain(publisher, store)
                took = time.monotonic() - started
            events = store.events()
    finally:
        relay.close()
    assert took < 12, f"2,000 events took {took:.1f} s over a 10 ms link"
    assert _stream(nats_stream.messages()) == _as_published(events, nats_stream.prefix)


def _relay(under_test: StreamUnderTest, *, delay: float = 0.0) -> Relay:
    """A relay to the NATS server (``tests/relay.py``): the test cuts NATS off behind it."""
    target = urlsplit(under_test.url)
    return Relay(target.hostname or "127.0.0.1", target.port or 4222, delay=delay)


def _through(relay: Relay) -> str:
    return f"nats://127.0.0.1:{relay.port}"


def _on_stream(under_test: StreamUnderTest, digest: str) -> bool:
    return any(m.body["payload"].get("blake3") == digest for m in under_test.messages())


def test_serve_publishes_each_commit_within_a_second(
    tmp_path: Path, nats_stream: StreamUnderTest
) -> None:
    with serving(tmp_path, nats_stream.env()) as server, server.client() as c:
        lags = []
        for _ in range(5):
            stored = upload_blob(c, os.urandom(100))
            committed = time.monotonic()
            _wait(partial(_on_stream, nats_stream, stored["digest"]), "the event on the stream")
            lags.append(time.monotonic() - committed)
        assert _metric(c, "artifactstore_events_unpublished") == 0
        events = _log_events(c)
        assert _metric(c, "artifactstore_events_published_seq") == events[-1]["seq"]
    messages = nats_stream.messages()
    assert [m.body for m in messages] == events
    # The poll is 0.25 s; reading the stream back here costs more than that.
    assert sorted(lags)[len(lags) // 2] < 1.0, lags


def test_serve_refuses_a_nats_url_that_is_not_nats(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env["ARTIFACTSTORE_HOME"] = str(tmp_path / "home")
    for url in ("http://127.0.0.1:4222", "127.0.0.1:4222", "nats://"):
        env["ARTIFACTSTORE_NATS_URL"] = url
        run = subprocess.run(
            [str(ARTIFACTSTORE), "serve", "--port", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2, run.stderr
        assert "NATS_URL" in run.stderr and "nats://" in run.stderr
        assert "Traceback" not in run.stderr


def test_nats_down_then_back_serve_commits_on_and_the_stream_catches_up(
    tmp_path: Path, nats_stream: StreamUnderTest
) -> None:
    relay = _relay(nats_stream)
    try:
        with serving(tmp_path, nats_stream.env(_through(relay))) as server, server.client() as c:
            upload_blob(c, os.urandom(100))
            _wait(lambda: len(nats_stream.messages()) == len(_log_events(c)), "the first event")
            relay.set("refuse")  # NATS down
            for _ in range(5):  # commits do not depend on NATS
                upload_blob(c, os.urandom(100))
            assert c.get("/ready").status_code == 200
            assert _metric(c, "artifactstore_events_unpublished") == 5
            time.sleep(1.0)  # a few failed rounds
            relay.set("up")
            took = _wait(
                lambda: _metric(c, "artifactstore_events_unpublished") == 0, "the catch-up"
            )
            events = _log_events(c)
            log = server.log()
    finally:
        relay.close()
    logged = [Event.from_json(e) for e in events]
    assert _stream(nats_stream.messages()) == _as_published(logged, nats_stream.prefix)
    unavailable = [json.loads(x) for x in log.splitlines() if '"status": "unavailable"' in x]
    assert unavailable, log[-3000:]
    assert all(x["event"] == "event_stream" and x["retry_in"] > 0 for x in unavailable)
    assert '"status": "recovered"' in log
    assert "Traceback" not in log
    print(f"\ncaught up {took:.2f} s after NATS came back; {len(unavailable)} failed attempts")


def test_two_replicas_one_publisher_and_a_takeover_when_it_dies(
    tmp_path: Path, nats_stream: StreamUnderTest
) -> None:
    """Two ``serve`` processes over one store: one holds the ``events-stream`` lease and
    publishes; SIGKILLed, the other takes over within seconds; the stream is the log."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    home = tmp_path / "home"
    replicas = [Server(home, tmp_path / name, nats_stream.env()) for name in ("a", "b")]
    for replica in replicas:
        replica.start()
    try:
        for i in range(6):
            with replicas[i % 2].client() as c:
                upload_blob(c, os.urandom(100))
        with replicas[0].client() as c:
            _wait(lambda: _metric(c, "artifactstore_events_unpublished") == 0, "publishing")
        connected = ['"status": "connected"' in replica.log() for replica in replicas]
        assert connected.count(True) == 1, connected  # one publisher, one connection
        holder, other = (0, 1) if connected[0] else (1, 0)
        _hard_kill(replicas[holder])
        with replicas[other].client() as c:
            for _ in range(4):
                upload_blob(c, os.urandom(100))
            took = _wait(
                lambda: _metric(c, "artifactstore_events_unpublished") == 0, "the takeover"
            )
            events = [Event.from_json(e) for e in _log_events(c)]
        assert '"status": "connected"' in replicas[other].log()
    finally:
        for replica in replicas:
            replica.stop()
    assert _stream(nats_stream.messages()) == _as_published(events, nats_stream.prefix)
    assert took < 3.0 + 5.0, took  # the lease's TTL, and a busy machine
    print(f"\nthe other replica published {took:.2f} s after the holder was killed")


# --- crash trials -----------------------------------------------------------------------


class _Committer:
    """Commits (uploads of new bytes: one ``blob.stored`` each) as fast as the server
    takes them, until stopped; a failed request (the server killed) ends it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Committer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self._stop.is_set():
                try:
                    response = c.post(
                        "/v1/blobs", params={"namespace": "ci"}, content=os.urandom(64)
                    )
                except httpx.TransportError:
                    return
                if response.status_code == 201:
                    self.acknowledged += 1


def _hard_kill(server: Server) -> None:
    """SIGKILL the server's whole process group: no shutdown code runs."""
    proc, server.process = server.process, None
    assert proc is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(WAIT)


def test_sigkill_at_random_instants_loses_and_repeats_nothing(
    tmp_path: Path, nats_stream: StreamUnderTest
) -> None:
    """After every restart the stream is exactly the log (every committed event once,
    in seq order, nothing else), whatever instant the kill hit.

    The windows that matter are between a commit and its publish (a kill
    leaves committed events unpublished: the stream behind the log) and between
    JetStream's acknowledgement and the cursor's update (acknowledged events
    unrecorded: the cursor behind the stream). NATS is reached through a relay
    that slows each answer by 10 ms, as a network would, so that the second
    window is wide enough for random kills to land in. The trials count how
    often each happened."""
    rng = random.Random(SEED)
    print(f"\nARTIFACTSTORE_STREAM_CRASH_SEED={SEED}")
    relay = _relay(nats_stream, delay=0.01)
    server = Server(tmp_path / "home", tmp_path, nats_stream.env(_through(relay)))
    behind_log = behind_stream = 0
    acknowledged = 0
    try:
        for trial in range(TRIALS):
            server.start()
            with _Committer(server.base_url) as committer:
                # A restarted server publishes once the dead one's lease (3 s) expires:
                # kills land before, while and after it catches up.
                time.sleep(rng.uniform(0.05, 3.0))
                _hard_kill(server)
            acknowledged += committer.acknowledged
            # What the kill left: the log (the database), the stream and the cursor.
            with Store.open(server.home, create=False, **nats_stream.overrides()) as store:
                events = store.events()
                cursor = store.stream_backlog().published
            messages = nats_stream.messages()
            held = int(messages[-1].msg_id or 0) if messages else 0
            behind_log += held < len(events)
            behind_stream += cursor < held
            # Never more than the log, never out of order, never twice: even before restart.
            assert [m.body for m in messages] == [e.to_json() for e in events[:held]], trial
        server.start()
        with server.client() as c:
            _wait_drained(lambda: _metric(c, "artifactstore_events_unpublished"), "the catch-up")
            events_json = _log_events(c)
        server.stop()
    finally:
        server.stop()
        relay.close()
    events = [Event.from_json(e) for e in events_json]
    assert len(events) >= acknowledged
    assert _stream(nats_stream.messages()) == _as_published(events, nats_stream.prefix)
    print(
        f"{TRIALS} trials, {len(events)} events: the kill left committed events unpublished "
        f"in {behind_log}, acknowledged events unrecorded in the cursor in {behind_stream}"
    )
    assert behind_log > 0, "no kill landed between a commit and its publish"
