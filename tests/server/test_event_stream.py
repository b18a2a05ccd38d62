"""``GET /v1/events/stream`` (the log live, as Server-Sent Events) and ``events --follow``.

On real server processes: a stream never ends by itself, which Starlette's
TestClient (it reads a whole body) cannot carry, and the dropped connection,
the restart and the shutdown cases need a real socket and a real uvicorn.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from artifactstore.client.remote import RemoteStore
from tests.conftest import ARTIFACTSTORE, Cli
from tests.matrix import StoreConfigs
from tests.server.conftest import Server, assert_problem, upload_blob
from tests.server.inprocess import InProcessServer

pytestmark = pytest.mark.configs("embedded", "scaleout")

WAIT = 30.0  # generous: the machine may be busy


def _last_seq(client: httpx.Client) -> int:
    seq = 0
    while True:
        page = client.get("/v1/events", params={"after": seq, "limit": 1000}).json()
        if not page["events"]:
            return seq
        seq = page["next_after"]


def _add_events(client: httpx.Client, n: int) -> None:
    """``n`` new events: each upload of new bytes logs one ``blob.stored``."""
    for _ in range(n):
        upload_blob(client, os.urandom(32))


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of an open stream, checking each ``id:`` is its seq."""
    for message in EventSource(response).iter_sse():
        if message.data:  # not a keep-alive
            event: dict[str, Any] = json.loads(message.data)
            assert message.id == str(event["seq"])
            yield event


def _read(events: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return list(itertools.islice(events, n))


def _stream(client: httpx.Client, **headers: str) -> Any:
    return client.stream(
        "GET", "/v1/events/stream", headers=headers, timeout=httpx.Timeout(WAIT, connect=10.0)
    )


def test_events_committed_after_the_stream_opens_arrive_in_order(live_server: Server) -> None:
    with live_server.client() as c:
        start = _last_seq(c)
        with _stream(c, **{"Last-Event-ID": str(start)}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            _add_events(c, 5)
            got = _read(_events(response), 5)
        page = c.get("/v1/events", params={"after": start}).json()["events"]
    assert [e["seq"] for e in got] == list(range(start + 1, start + 6))
    # The same JSON as the paged log's items.
    assert got == page[:5]


def test_resume_with_last_event_id_gives_exactly_the_rest(live_server: Server) -> None:
    with live_server.client() as c:
        _add_events(c, 4)
        end = _last_seq(c)
        # Last-Event-ID wins over ?after (a browser's EventSource keeps the first URL).
        with c.stream(
            "GET",
            "/v1/events/stream",
            params={"after": 0},
            headers={"Last-Event-ID": str(end - 3)},
            timeout=WAIT,
        ) as response:
            events = _events(response)
            got = _read(events, 3)
            _add_events(c, 1)
            got += _read(events, 1)
        with c.stream("GET", "/v1/events/stream", params={"after": end}, timeout=WAIT) as r:
            after_param = _read(_events(r), 1)
    assert [e["seq"] for e in got] == [end - 2, end - 1, end, end + 1]
    assert after_param[0]["seq"] == end + 1


def test_a_client_cut_off_mid_stream_resumes_without_gap_or_duplicate(
    live_server: Server,
) -> None:
    """The connection drops (the client's socket closed) while events are still being
    committed; reconnecting with the last ``id:`` seen gives exactly the rest."""
    with live_server.client() as c:
        start = _last_seq(c)
        committing = threading.Thread(target=_add_events, args=(c, 30))
        seen: list[int] = []
        cuts = 0
        committing.start()
        try:
            while len(seen) < 30:
                last = seen[-1] if seen else start
                with (
                    httpx.Client(base_url=live_server.base_url) as own,
                    _stream(own, **{"Last-Event-ID": str(last)}) as response,
                ):
                    # Cut after a few events, mid-burst (the last round reads to the end).
                    seen += [e["seq"] for e in _read(_events(response), min(7, 30 - len(seen)))]
                cuts += 1
        finally:
            committing.join(WAIT)
    assert seen == list(range(start + 1, start + 31))
    assert cuts >= 4


@pytest.mark.parametrize(
    "value", ["abc", "-1", "1.5", "1e3", "99999999999999999999", "4611686018427387905", "٣"]
)
def test_a_bad_last_event_id_is_a_clear_problem(live_server: Server, value: str) -> None:
    with live_server.client() as c:
        body = assert_problem(
            c.get("/v1/events/stream", headers={b"Last-Event-ID": value.encode()}, timeout=10),
            422,
            "invalid_input",
        )
    assert "Last-Event-ID" in body["detail"]


@pytest.mark.parametrize("after", ["-1", "x", str(2**62 + 1)])
def test_a_bad_after_is_a_clear_problem(live_server: Server, after: str) -> None:
    with live_server.client() as c:
        assert_problem(c.get("/v1/events/stream", params={"after": after}), 422)


def test_the_stream_needs_the_scope_of_the_log(tmp_path: Path, store_configs: StoreConfigs) -> None:
    srv = InProcessServer(tmp_path / "home", tmp_path, store_configs.new().env(), no_auth=False)
    srv.start()
    try:
        with srv.client() as anonymous:
            assert_problem(anonymous.get("/v1/events/stream"), 401, "unauthenticated")
            assert_problem(anonymous.get("/v1/events"), 401, "unauthenticated")
    finally:
        srv.stop()


def test_a_client_that_goes_away_ends_its_request(live_server: Server) -> None:
    with live_server.client() as c:
        start = _last_seq(c)
        with _stream(c, **{"Last-Event-ID": str(start)}) as response:
            _add_events(c, 1)
            _read(_events(response), 1)
        # The server notices the closed connection and finishes the request (logged).
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            done = [r for r in live_server.access_log() if r["path"] == "/v1/events/stream"]
            if any(r["status"] == 200 for r in done):
                return
            time.sleep(0.1)
    pytest.fail("the stream's request never ended after its client left")


@pytest.fixture
def own_server(tmp_path: Path, store_configs: StoreConfigs) -> Iterator[Server]:
    """A server of the test's own, to stop and restart."""
    srv = Server(tmp_path / "home", tmp_path, store_configs.new().env())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _follow(url: str, count: int, out: list[int]) -> threading.Thread:
    """A thread collecting the seqs of ``count`` events from ``follow_events``."""

    def run() -> None:
        store = RemoteStore(url, token=None, parallel=1, timeout=WAIT)
        try:
            for e in store.follow_events(0):
                out.append(e.seq)
                if len(out) >= count:
                    return
        finally:
            store.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for(out: list[int], n: int) -> None:
    deadline = time.monotonic() + WAIT
    while len(out) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(out) >= n, out


def test_shutdown_ends_streams_and_a_follower_resumes_without_gap_or_duplicate(
    own_server: Server,
) -> None:
    seqs: list[int] = []
    follower = _follow(own_server.base_url, 9, seqs)
    with own_server.client() as c:
        _add_events(c, 3)
    _wait_for(seqs, 3)
    # SIGTERM with a stream open: the server ends it and exits promptly (not
    # after Server.stop's 10 s escalation to SIGKILL).
    assert own_server.process is not None
    proc = own_server.process
    began = time.monotonic()
    own_server.restart(hard=False)
    # Exited on the SIGTERM (uvicorn re-raises it once shut down), not Server.stop's SIGKILL.
    assert proc.returncode in (0, -signal.SIGTERM), own_server.log()
    assert time.monotonic() - began < 8.0
    # The open stream was ended (and its request logged), not cut.
    assert any(r["path"] == "/v1/events/stream" for r in own_server.access_log())
    with own_server.client() as c:
        _add_events(c, 3)
    _wait_for(seqs, 6)
    own_server.restart(hard=True)  # cut off mid-stream: the connection just breaks
    with own_server.client() as c:
        _add_events(c, 3)
    follower.join(WAIT)
    assert seqs == list(range(1, 10))


def _follow_cli(url: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env.update({"ARTIFACTSTORE_URL": url, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    return subprocess.Popen(
        [str(ARTIFACTSTORE), "events", "--follow", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(proc: subprocess.Popen[str], n: int) -> list[str]:
    assert proc.stdout is not None
    timer = threading.Timer(WAIT, proc.kill)  # a follower that hangs fails, not blocks
    timer.start()
    try:
        return [proc.stdout.readline() for _ in range(n)]
    finally:
        timer.cancel()


def test_cli_follow_prints_events_pushed_meanwhile_and_ctrl_c_exits_130(
    live_server: Server, tmp_path: Path
) -> None:
    with live_server.client() as c:
        start = _last_seq(c)
        proc = _follow_cli(live_server.base_url, tmp_path, "--after", str(start), "--json")
        try:
            _add_events(c, 2)
            lines = _lines(proc, 2)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=WAIT)
    assert [json.loads(line)["seq"] for line in lines] == [start + 1, start + 2]
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_cli_follow_with_a_limit_stops_there(live_server: Server, tmp_path: Path) -> None:
    with live_server.client() as c:
        start = _last_seq(c)
        proc = _follow_cli(live_server.base_url, tmp_path, "--after", str(start), "--limit", "2")
        _add_events(c, 3)
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert [int(line.split()[0]) for line in lines] == [start + 1, start + 2]
    assert "blob.stored" in lines[0]


def test_cli_follow_in_local_mode_still_polls_the_database(cli: Cli) -> None:
    (cli.cwd / "a.txt").write_text("a\n")
    cli.ok("push", "ci/app:1", "a.txt")
    last = int(cli.ok("events").stdout.decode().splitlines()[-1].split()[0])
    proc = subprocess.Popen(
        [str(ARTIFACTSTORE), "events", "--follow", "--after", str(last), "--limit", "1"],
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    (cli.cwd / "b.txt").write_text("b\n")
    cli.ok("push", "ci/app:2", "b.txt")
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert int(out.split()[0]) == last + 1
