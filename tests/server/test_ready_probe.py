"""``/ready`` on a disk that refuses bytes answers 503 and leaves no probe file behind.

A full disk lets the probe file be created and then refuses its bytes. The
same happens, for real, to a process over its file-size limit
(``RLIMIT_FSIZE``): creating a file works, writing a byte fails with
``EFBIG`` (Python ignores ``SIGXFSZ``). The test lowers that limit on a
running ``serve`` process and asks ``/ready`` without credentials.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.server.conftest import Server, assert_problem

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit is Linux's")


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("ready")
    srv = Server(workdir / "home", workdir, {}, ["--workers", "1"])  # one process to limit
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_ready_leaves_no_probe_when_writes_fail(server: Server) -> None:
    tmp = server.home / "storage" / "tmp"
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        assert c.get("/ready").status_code == 200
        assert server.process is not None
        pid = server.process.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))  # soft: it can be raised again
        try:
            for _ in range(5):
                body = assert_problem(c.get("/ready"), 503, "not_ready")
                assert "not writable" in body["detail"]
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("health-")) == []
        assert c.get("/ready").status_code == 200
