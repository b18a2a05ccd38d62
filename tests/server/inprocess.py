"""The app ``artifactstore serve`` runs, run in this process and reached without a socket.

:class:`InProcessServer` has the interface of the real-process
:class:`tests.server.conftest.Server` that HTTP tests use (``base_url``,
``home``, ``client()``, ``log()``, ``access_log()``, ``start``/``stop``/
``restart``), so a test body does not know which one it talks to. It builds
the app as ``serve`` does (``server/main.py``): ``run()`` creates or migrates
the store and, with authentication on, creates the first admin token;
``app_from_env()`` opens the worker's Store from the settings and wires
``create_app`` with ``LoopbackDevAuth`` (``--no-auth``) or token
authentication, the body timeouts and the periodic jobs (background GC, the
upload sweep), and closes the store at shutdown. Settings come from the
same ``ARTIFACTSTORE_*`` overrides a server process would be started with
(``Settings.load`` on that mapping, never on this process's environment).

Requests go through Starlette's TestClient transport: the real ASGI app, its
lifespan and its middleware, with no TCP in between. What that transport does
not reproduce stays on real server processes (see ``conftest.py``): request
bodies arrive whole (so framing, streaming and timeouts of request bodies are
not exercised), header bytes are re-encoded as UTF-8, there is no connection
(keep-alive, close, SIGKILL) and no ``http.response.pathsend`` (whole files go
out through FileResponse's chunked fallback; ``test_pathsend.py`` covers the
zero-copy path on real servers).

The app is built by ``server.main.app_for``, as ``serve``'s is; the one
difference is that each in-process server logs to a logger of its own,
written to ``workdir/server.log`` as a server process's stderr is, so that two
servers alive in one test process keep separate logs.
:func:`test_in_process_app_is_wired_like_serve` (test_contract.py) checks that
the settings taken from a module's overrides build the app ``serve`` builds
from the environment.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from artifactstore.config import Settings
from artifactstore.server.main import app_for, bootstrap_admin
from artifactstore.store import Store
from tests.matrix import store_overrides

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 fork for its TestClient; httpx is what we
    # install, and the TestClient works on it (it only warns at import).
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["InProcessServer", "LogFile", "bearer", "serve_app"]

#: The peer address requests appear to come from (``serve --no-auth`` binds loopback).
CLIENT_ADDRESS = ("127.0.0.1", 50000)

_loggers = itertools.count()


def serve_app(settings: Settings, logger: logging.Logger) -> FastAPI:
    """The app ``serve`` runs for ``settings``, logging to ``logger``."""
    return app_for(settings, logger)


class _Borrowed(httpx.BaseTransport):
    """The running app's transport, for one more client; closing the client leaves it open."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)


def bearer(token: str | None, kw: dict[str, Any]) -> dict[str, Any]:
    """httpx client options ``kw`` with an ``Authorization`` header for ``token`` (if any)."""
    if token is None:
        return kw
    return {**kw, "headers": {"Authorization": f"Bearer {token}", **kw.get("headers", {})}}


class LogFile:
    """A server's log file (a process's stderr, or an in-process app's logger)."""

    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def access_log(self) -> list[dict[str, Any]]:
        """The JSON lines logged so far (access log and background jobs)."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


class InProcessServer(LogFile):
    """The served app over the store at ``home``; ``env`` holds its ARTIFACTSTORE_* settings.

    ``no_auth`` is ``serve --no-auth``; without it the first start creates the
    bootstrap admin token (:attr:`admin`) and writes the notice ``serve``
    prints to the log, as a server process's stderr would hold it.
    """

    base_url = "http://testserver"

    def __init__(
        self, home: Path, workdir: Path, env: Mapping[str, str], *, no_auth: bool = True
    ) -> None:
        self.home = home
        self.workdir = workdir
        self.env = {"ARTIFACTSTORE_HOME": str(home), **env}
        self.no_auth = no_auth
        self.log_path = workdir / "server.log"
        self._admin: str | None = None
        self.starts = 0
        self._running: TestClient | None = None
        self._logger = logging.getLogger(f"tests.inprocess.{next(_loggers)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None

    @property
    def admin(self) -> str:
        """The secret of the bootstrap admin token (authentication on)."""
        assert self._admin is not None, "no admin token: the server runs --no-auth"
        return self._admin

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def running(self) -> bool:
        return self._running is not None

    def settings(self) -> Settings:
        """What ``serve`` started with these ARTIFACTSTORE_* variables (in ``workdir``) reads."""
        env = {"ARTIFACTSTORE_CONFIG": str(self.workdir / "artifactstore.toml"), **self.env}
        return Settings.load(env, no_auth=True if self.no_auth else None)

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        assert self._running is None, "already running"
        self.starts += 1
        self._handler = logging.FileHandler(self.log_path)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self._handler)
        try:
            settings = self.settings()
            store = Store.from_config(settings, create=True)  # as run(): create or migrate
            try:
                secret = None if settings.no_auth else bootstrap_admin(store)
            finally:
                store.close()
            if secret is not None:
                self._admin = secret
                self._logger.info(
                    "created the first admin token (shown only now; store it safely):\n"
                    f"  ARTIFACTSTORE_TOKEN={secret}"
                )
            client = TestClient(
                serve_app(settings, self._logger),
                base_url=self.base_url,
                raise_server_exceptions=True,  # a server-side exception fails the test
                follow_redirects=False,
                client=CLIENT_ADDRESS,
            )
            client.__enter__()  # the lifespan: background jobs start
        except BaseException:
            self._drop_handler()
            raise
        self._running = client

    def stop(self) -> None:
        """A clean shutdown (SIGTERM to ``serve``): the lifespan ends, the store closes."""
        client, self._running = self._running, None
        if client is None:
            return
        try:
            client.__exit__(None, None, None)
        finally:
            self._drop_handler()

    def kill(self) -> None:
        raise RuntimeError("SIGKILL needs a server process: use the live_server fixture")

    def restart(self, *, hard: bool = True) -> None:
        """Stop and start again over the same data directory (``hard``: not in process)."""
        if hard:
            self.kill()
        self.stop()
        self.start()

    def _drop_handler(self) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            self._logger.removeHandler(handler)
            handler.close()

    # --- helpers --------------------------------------------------------------------------

    def open_store(self, **overrides: Any) -> Store:
        """The store this server serves, opened beside it (its database and storage)."""
        return Store.open(self.home, **{**store_overrides(self.env), **overrides})

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        """An httpx client of the running app (several may be used at once, from threads);
        ``token``: as a bearer of that token."""
        assert self._running is not None, "not running"
        kw = bearer(token, kw)
        kw.setdefault("timeout", 60.0)
        return httpx.Client(
            base_url=self.base_url, transport=_Borrowed(self._running._transport), **kw
        )
