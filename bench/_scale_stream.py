"""bench/scale.py, part ``stream``: events/s from the event log to NATS JetStream over a
slow link (issue 18's stream out).

A SQLite store with ``--stream-events`` committed events (schema registrations,
appended in one transaction) is published by the store's own publisher
(``services/stream.py``) to the NATS server on 127.0.0.1:4222 through the
tests' TCP relay (``tests/relay.py``), which delays every answer by
``--stream-delay`` seconds (10 ms: a link to another zone). Twice, each to a
stream of its own: with one message in flight (``WINDOW = 1``: what the
publisher did before it was pipelined, one acknowledged publish per round
trip) and with its ``WINDOW`` in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import blake3
from bench._common import render_table

__all__ = ["stream_part"]

NATS = ("127.0.0.1", 4222)


def _load(store: Any, count: int) -> None:
    from artifactstore.controlplane import eventlog
    from artifactstore.model.package_events import SchemaRegistered

    items = []
    for i in range(count):
        schema = {"type": "object", "description": f"bench {i}"}
        text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        digest = "blake3:" + blake3.blake3(text.encode()).hexdigest()
        items.append(SchemaRegistered(f"bench.s{i}.v1", schema, digest))
    with store.db.write() as conn:
        eventlog.append_many(conn, items, "bench")


def _delete(stream: str) -> None:
    import nats

    async def go() -> None:
        nc = await nats.connect(f"nats://{NATS[0]}:{NATS[1]}", connect_timeout=5)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(go())


def _trial(root: Path, count: int, delay: float, window: int) -> float:
    """Events/s publishing ``count`` events with ``window`` in flight over the relay."""
    from tests.relay import Relay

    from artifactstore.services import stream as stream_module
    from artifactstore.store import Store

    name = f"BENCH_{secrets.token_hex(4).upper()}"
    relay = Relay(*NATS, delay=delay)
    saved = stream_module.WINDOW
    stream_module.WINDOW = window
    try:
        home = root / f"stream-{window}"
        with Store.open(
            home,
            nats_url=f"nats://127.0.0.1:{relay.port}",
            nats_stream=name,
            nats_subject_prefix=name.lower(),
        ) as store:
            _load(store, count)
            publisher = store.event_publisher(logging.getLogger("bench.stream"))
            try:
                publisher.run()  # connects and creates the stream: not timed
                store_left = store.stream_backlog().unpublished
                started = time.perf_counter()
                while store.stream_backlog().unpublished:
                    publisher.run()
                took = time.perf_counter() - started
            finally:
                publisher.close()
        return store_left / took
    finally:
        stream_module.WINDOW = saved
        relay.close()
        _delete(name)


def stream_part(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from artifactstore.services.stream import WINDOW

    work = root / "stream"
    work.mkdir()
    rows = []
    figures: dict[str, float] = {}
    for window, count in ((1, min(args.stream_events, 1000)), (WINDOW, args.stream_events)):
        rate = _trial(work, count, args.stream_delay, window)
        figures[str(window)] = rate
        rows.append([f"{window} in flight", f"{count:,}", f"{rate:,.0f}/s"])
    print(f"\nevent stream to NATS through a relay adding {args.stream_delay * 1000:.0f} ms")
    print(render_table(["publisher", "events", "events/s"], rows))
    return {"events_per_s": figures, "delay": args.stream_delay}
