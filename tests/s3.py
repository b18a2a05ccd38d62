"""The ``s3_server`` fixture for any test directory (as ``tests/pg.py`` is for PostgreSQL).

A module outside ``tests/dataplane`` imports it (``from tests.s3 import
s3_server_fixture``; pytest knows it as ``s3_server``) to get moto's real S3
server for its tests; ``tests/dataplane/s3server.py`` starts it and holds the
dummy AWS credentials it sets.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dataplane.s3server import AWS_ENV, BUCKET, S3Server, run_s3_server

__all__ = ["AWS_ENV", "BUCKET", "S3Server", "s3_server_fixture", "s3_url"]


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, with an empty bucket, for the session."""
    yield from run_s3_server(tmp_path_factory.mktemp("aws"))


def s3_url(server: S3Server, prefix: str) -> str:
    """The ``s3://`` STORAGE_URL of ``prefix`` in the server's bucket."""
    return f"s3://{server.bucket}/{prefix}?endpoint={server.endpoint}&region=us-east-1"
