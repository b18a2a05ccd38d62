"""Both upload stagings pass the staging conformance suite."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from artifactstore.testing.staging_contract import (
    StagingContract,
    StagingTarget,
    local_staging_target,
    s3_staging_target,
)
from tests.dataplane.s3server import S3Server


@pytest.fixture(params=["local", "s3"])
def staging_target(request: pytest.FixtureRequest, tmp_path: Path) -> StagingTarget:
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return s3_staging_target(server.bucket, server.endpoint, f"staging-{uuid.uuid4().hex}")
    return local_staging_target(tmp_path / "storage")


class TestStagingContract(StagingContract):
    pass
