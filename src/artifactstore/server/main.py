"""Running the server: the app factory each worker calls, and the ``serve`` runner.

Workers are separate processes (uvicorn or granian); each opens its own Store
from the same settings (the environment), which is also how stateless
replicas share one database and one storage backend.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import FastAPI

from artifactstore.config import Settings
from artifactstore.errors import InvalidInput
from artifactstore.server.app import ServerLimits, create_app
from artifactstore.server.auth import LoopbackDevAuth
from artifactstore.store import Store

__all__ = ["app_for", "app_from_env", "check_bind", "run"]


def app_from_env() -> FastAPI:
    """The worker's app: a Store from the environment, closed at shutdown.

    Each worker process calls it before its first connection, so it also gives
    the process's wire protocol its head timeout.
    """
    settings = Settings.load()
    protocol = _http_protocol()
    if protocol != "h11":
        protocol.header_timeout = settings.header_timeout
    return app_for(settings)


def app_for(settings: Settings, logger: logging.Logger | None = None) -> FastAPI:
    """The app ``serve`` runs for ``settings``: its Store, auth and limits, the periodic
    jobs (``server/background.py``: GC, the sweep of expired uploads), the Store closed
    at shutdown."""
    store = Store.from_config(settings, create=False)
    limits = ServerLimits(
        idle_timeout=settings.body_idle_timeout, total_timeout=settings.body_total_timeout
    )
    auth = LoopbackDevAuth() if settings.no_auth else None  # None: token authentication
    app = create_app(store, auth=auth, limits=limits, logger=logger)
    jobs = app.router.lifespan_context  # create_app's: the periodic jobs (background GC)

    @contextlib.asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        async with jobs(app_):
            yield
        store.close()

    app.router.lifespan_context = lifespan
    return app


def check_bind(host: str, no_auth: bool) -> None:
    """Without authentication, only loopback addresses may be bound (docs/security.md)."""
    if not no_auth:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidInput(f"--no-auth refuses to listen on {host!r}: bind 127.0.0.1 or ::1")


def bootstrap_admin(store: Store) -> str | None:
    """On a store without tokens, create the first admin token; returns its secret.

    There is no default password: the secret is printed once by ``serve`` and
    ``artifactstore token create --admin`` on the server host recovers access.
    """
    if store.token_count() > 0:
        return None
    _info, secret = store.create_token("bootstrap-admin", ["admin"], actor="serve:bootstrap")
    return secret


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    server: Literal["uvicorn", "granian"],
    announce: Callable[[], None],
) -> None:
    """Prepare the store (migrate a new one, refuse an outdated one), then serve.

    ``announce`` runs once the store answered, just before serving: a start that
    fails says only why, not "serving" first.
    """
    store = Store.from_config(settings, create=True)
    try:
        # Refuse to start, in one line, rather than serve 503s from the first request:
        # a typo in STORAGE_URL's host or a bucket without write access shows at once.
        store.health()
        secret = None if settings.no_auth else bootstrap_admin(store)
    finally:
        store.close()
    announce()
    if secret is not None:
        print(
            "created the first admin token (shown only now; store it safely):\n"
            f"  ARTIFACTSTORE_TOKEN={secret}",
            file=sys.stderr,
            flush=True,
        )
    os.environ["ARTIFACTSTORE_NO_AUTH"] = "1" if settings.no_auth else "0"
    os.environ["ARTIFACTSTORE_HOME"] = str(settings.home.absolute())
    os.environ["ARTIFACTSTORE_DATABASE_URL"] = settings.database_url
    os.environ["ARTIFACTSTORE_STORAGE_URL"] = settings.storage_url
    target = "artifactstore.server.main:app_from_env"
    if server == "granian":
        from granian import Granian
        from granian.constants import Interfaces
        from granian.http import HTTP1Settings

        Granian(
            target,
            address=host,
            port=port,
            workers=workers,
            interface=Interfaces.ASGI,
            factory=True,
            log_access=False,
            # granian takes milliseconds, at most 60 s
            http1_settings=HTTP1Settings(
                header_read_timeout=min(60_000, max(1, int(settings.header_timeout * 1000)))
            ),
        ).serve()
        return
    import uvicorn

    uvicorn.run(
        target,
        factory=True,
        http=_http_protocol(),
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
        h11_max_incomplete_event_size=64 * 1024,
        # The client's address is the socket's peer unless TRUSTED_PROXIES says
        # otherwise (server/auth.py): uvicorn would otherwise believe any
        # X-Forwarded-For sent from 127.0.0.1.
        proxy_headers=False,
    )


def _http_protocol() -> Any:
    """httptools with a bound on the request head, or h11 (bounded by its own setting)."""
    try:
        from artifactstore.server.wire import BoundedHttpToolsProtocol
    except ImportError:  # httptools is not installed: h11's limit applies
        return "h11"
    return BoundedHttpToolsProtocol
