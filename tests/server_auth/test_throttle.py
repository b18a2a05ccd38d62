"""Failed-authentication throttling and the client address it counts by (SPEC section 7).

Failures are counted per client address; past the limit a bad token gets 429,
but a valid token from the same address is always served. The address is the
socket's peer, or the right-most untrusted address of ``X-Forwarded-For`` when
the peer is one of ``TRUSTED_PROXIES``. The in-process servers' peer is
127.0.0.1 (``tests.server.inprocess.CLIENT_ADDRESS``); one test runs a real
``serve`` process, whose HTTP server must not believe the header on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from artifactstore.config import Settings
from artifactstore.errors import InvalidInput
from tests.server.conftest import assert_problem
from tests.server.inprocess import InProcessServer
from tests.server_auth.test_permissions import _start, _stop, in_process_server

BAD = "Bearer ast_" + "z" * 16 + "_" + "q" * 43
LIMIT = 10  # the default ``auth_failures_per_minute``


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[InProcessServer]:
    with in_process_server(tmp_path, {}) as server:
        yield server


@pytest.fixture
def behind_proxy(tmp_path: Path) -> Iterator[InProcessServer]:
    """A server behind a proxy on 127.0.0.1 and a proxy tier in 10.0.0.0/8."""
    env = {"ARTIFACTSTORE_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}
    with in_process_server(tmp_path, env) as server:
        yield server


def _bad(c: httpx.Client, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"Authorization": BAD}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return c.get("/v1/packages", headers=headers)


def test_a_valid_token_is_served_from_a_throttled_address(srv: InProcessServer) -> None:
    with srv.client() as c:
        codes = [_bad(c).status_code for _ in range(LIMIT + 2)]
        assert codes[:LIMIT] == [401] * LIMIT and codes[LIMIT:] == [429, 429]
        admin = {"Authorization": f"Bearer {srv.admin}"}
        for _ in range(3):  # not once by luck: every time, between further failures
            assert c.get("/v1/packages", headers=admin).status_code == 200
            throttled = assert_problem(_bad(c), 429, "too_many_requests")
            assert "retry in" in throttled["detail"]
        assert 0 < int(_bad(c).headers["retry-after"]) <= 61
        # Anonymous callers present nothing to fail: they get the usual 401, not 429.
        assert_problem(c.get("/v1/packages"), 401, "unauthenticated")


def test_forwarded_for_is_ignored_from_an_untrusted_peer(srv: InProcessServer) -> None:
    with srv.client() as c:
        codes = [_bad(c, f"198.51.100.{i}").status_code for i in range(LIMIT + 3)]
    assert codes[LIMIT:] == [429] * 3  # a new header each time does not make a new client


def test_forwarded_for_is_honoured_from_a_trusted_proxy(behind_proxy: InProcessServer) -> None:
    with behind_proxy.client() as c:
        for _ in range(LIMIT):
            assert _bad(c, "198.51.100.7").status_code == 401
        assert _bad(c, "198.51.100.7").status_code == 429
        # Through a second trusted hop, and with a forged left part: still 198.51.100.7.
        assert _bad(c, "203.0.113.1, 198.51.100.7, 10.1.2.3").status_code == 429
        # Another client behind the same proxy is not throttled.
        assert _bad(c, "198.51.100.8").status_code == 401
        assert _bad(c, "198.51.100.7, 198.51.100.8").status_code == 401
        # Without the header the proxy itself is the client, with a clean record.
        assert _bad(c).status_code == 401
    # The access log names the same client the throttle counts.
    logged = {e.get("client") for e in behind_proxy.access_log()}
    assert {"198.51.100.7", "198.51.100.8", "127.0.0.1"} <= logged
    assert "203.0.113.1" not in logged and "10.1.2.3" not in logged


def test_a_real_server_does_not_believe_forwarded_for_on_its_own(tmp_path: Path) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default; ``serve`` must not."""
    srv = _start(tmp_path / "home", tmp_path / "server.log", {})
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            codes = [_bad(c, f"198.51.100.{i}").status_code for i in range(LIMIT + 2)]
            assert codes[LIMIT:] == [429, 429], codes
            ok = c.get("/v1/packages", headers={"Authorization": f"Bearer {srv.admin}"})
            assert ok.status_code == 200
    finally:
        _stop(srv)


def test_two_authorization_headers_are_refused(srv: InProcessServer) -> None:
    valid = f"Bearer {srv.admin}"
    with srv.client() as c:
        for pair in ((valid, BAD), (BAD, valid), (valid, valid)):
            headers = [("Authorization", pair[0]), ("Authorization", pair[1])]
            r = c.get("/v1/packages", headers=headers)
            body = assert_problem(r, 400, "ambiguous_credentials")
            assert "one Authorization header" in body["detail"]
        # One header is fine.
        assert c.get("/v1/packages", headers={"Authorization": valid}).status_code == 200


def test_trusted_proxies_must_parse(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="TRUSTED_PROXIES"):
        Settings.load({"ARTIFACTSTORE_TRUSTED_PROXIES": "10.0.0.0/8, proxy.example"})
    nets = Settings.load({"ARTIFACTSTORE_TRUSTED_PROXIES": "10.0.0.0/8,192.0.2.7, ::1"})
    assert [str(n) for n in nets.trusted_networks()] == ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]
    toml = tmp_path / "artifactstore.toml"
    toml.write_text('trusted_proxies = ["10.0.0.0/8", "2001:db8::/32"]\n')
    listed = Settings.load({"ARTIFACTSTORE_CONFIG": str(toml)})
    assert [str(n) for n in listed.trusted_networks()] == ["10.0.0.0/8", "2001:db8::/32"]
