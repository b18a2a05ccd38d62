"""Two real ``artifactstore serve`` processes over one PostgreSQL database and one bucket.

Each replica has a home of its own (nothing is shared through it) and the same
``ARTIFACTSTORE_DATABASE_URL`` (a random database of ``tests/pg.py``) and
``ARTIFACTSTORE_STORAGE_URL``: what N replicas behind a load balancer share. The
storage URL is the fixture's parameter (``STORAGES``), so every test runs on
each kind of shared storage. A is started first and prints the admin token;
B starts over the same database, which already has one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Cli, CliResult
from tests.pg import new_database
from tests.s3 import S3Server, s3_url
from tests.server.conftest import Server

__all__ = ["LIMIT", "Replicas"]

#: Failed authentications per minute per address (one limit across the replicas).
LIMIT = 6

#: Shared storage kinds the replica tests run on: a directory both replicas see, and a
#: bucket of a real S3 server (moto's, ``tests/dataplane/s3server.py``).
STORAGES = ["file", "s3"]


@dataclass
class Replicas:
    """A and B (``serve`` processes, authentication on) over one database and one
    storage, and the admin token A printed."""

    a: Server
    b: Server
    admin: str
    database_url: str
    storage_url: str
    root: Path

    def cli(self, *args: str | Path, server: Server | None = None) -> CliResult:
        """The CLI against ``server`` (remote mode), or local on the shared database and
        storage (``server`` None), with a home of its own."""
        run = Cli(self.root / "cli-home", self.root)
        if server is None:
            run.env.update(self.shared_env(run.home))
        else:
            del run.env["ARTIFACTSTORE_HOME"]
            run.env.update({"ARTIFACTSTORE_URL": server.url, "ARTIFACTSTORE_TOKEN": self.admin})
        run.env["XDG_CACHE_HOME"] = str(self.root / "cli-cache")
        return run(*args)

    def shared_env(self, home: Path) -> Mapping[str, str]:
        return {
            "ARTIFACTSTORE_HOME": str(home),
            "ARTIFACTSTORE_DATABASE_URL": self.database_url,
            "ARTIFACTSTORE_STORAGE_URL": self.storage_url,
        }


def _storage_url(request: pytest.FixtureRequest, root: Path) -> str:
    if request.param == "file":
        shared = root / "shared-storage"
        shared.mkdir()
        return f"file://{shared}"
    assert request.param == "s3", request.param
    # The session's server (``tests/s3.py``) sets the dummy AWS credentials in the
    # environment, which the replicas inherit.
    server: S3Server = request.getfixturevalue("s3_server")
    return s3_url(server, root.name)


@pytest.fixture(scope="module", params=STORAGES)
def replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    storage_url = _storage_url(request, root)
    with new_database() as database_url:
        shared = {
            "ARTIFACTSTORE_DATABASE_URL": database_url,
            "ARTIFACTSTORE_STORAGE_URL": storage_url,
            "ARTIFACTSTORE_AUTH_FAILURES_PER_MINUTE": str(LIMIT),
            "ARTIFACTSTORE_GC_GRACE": "1h",  # the GC test runs its own with grace 0
        }
        a, b = (_replica(root, name, shared) for name in ("a", "b"))
        pair = Replicas(a, b, "", database_url, storage_url, root)
        try:
            a.start()
            pair.admin = a.admin  # the first start over the database prints it
            b.start()
            yield pair
        finally:
            a.stop()
            b.stop()


def _replica(root: Path, name: str, shared: Mapping[str, str]) -> Server:
    """Replica ``name``: a home and working directory (its log) of its own."""
    workdir = root / name
    workdir.mkdir()
    return Server(workdir / "home", workdir, shared, no_auth=False)
