"""What an S3 store says when S3 fails: retried transient errors, then clear messages.

The messages are checked through the CLI, where a traceback would show: an
unreachable endpoint, no credentials, credentials S3 refuses (moto with its
IAM checks on), a missing bucket.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from artifactstore.dataplane.backends import open_backend
from artifactstore.dataplane.backends.s3 import S3Backend
from artifactstore.errors import InvalidInput, StorageError
from tests.conftest import ARTIFACTSTORE
from tests.dataplane.conftest import Throttled
from tests.dataplane.s3server import S3Server, run_s3_server
from tests.server.conftest import free_port


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_the_url_sets_the_retry_policy(throttled: Throttled, mode: str) -> None:
    url = f"s3://bucket/p?endpoint={throttled.endpoint}&region=us-east-1&retry_mode={mode}"
    few = open_backend(f"{url}&max_attempts=2", "STORAGE_URL", fsync=True, name="local")
    with pytest.raises(StorageError, match="503"):
        few.stat("k")
    assert len(throttled.seen) == 2, "two attempts, both throttled"
    throttled.seen.clear()
    enough = open_backend(f"{url}&max_attempts=3", "STORAGE_URL", fsync=True, name="local")
    assert enough.stat("k") == 5
    assert len(throttled.seen) == 3, "two 503s, then the answer"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("retry_mode=legacy", "retry_mode must be standard or adaptive"),
        ("max_attempts=0", "max_attempts must be a whole number from 1 to 20"),
        ("max_attempts=21", "max_attempts must be a whole number"),
        ("max_attempts=three", "max_attempts must be a whole number"),
        ("max_attempts=-1", "max_attempts must be a whole number"),
    ],
)
def test_bad_retry_parameters_are_refused(query: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        open_backend(f"s3://bucket/p?{query}", "STORAGE_URL", fsync=True, name="local")


def _push(tmp_path: Path, url: str, **env: str | None) -> str:
    """``artifactstore push`` to a store on ``url``; its stderr (it must fail cleanly)."""
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    (tree / "f").write_text("bytes")
    full = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    full.update({"ARTIFACTSTORE_HOME": str(tmp_path / "home"), "ARTIFACTSTORE_STORAGE_URL": url})
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    done = subprocess.run(
        [str(ARTIFACTSTORE), "push", "ci/app:1", str(tree)],
        env=full,
        capture_output=True,
        timeout=120,
    )
    stderr = done.stderr.decode()
    assert done.returncode != 0, "the push should have failed"
    assert "Traceback" not in stderr, stderr
    return stderr


def test_an_unreachable_endpoint_is_named(s3_server: S3Server, tmp_path: Path) -> None:
    url = f"s3://{s3_server.bucket}/p?endpoint=http://127.0.0.1:{free_port()}&max_attempts=2"
    assert "cannot reach the S3 endpoint" in _push(tmp_path, url)


def test_missing_credentials_are_named(s3_server: S3Server, tmp_path: Path) -> None:
    url = f"s3://{s3_server.bucket}/p?endpoint={s3_server.endpoint}"
    stderr = _push(
        tmp_path, url, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_SESSION_TOKEN=None
    )
    assert "no usable AWS credentials" in stderr
    assert "AWS_ACCESS_KEY_ID" in stderr


def test_a_missing_bucket_is_named(s3_server: S3Server, tmp_path: Path) -> None:
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/p?endpoint={s3_server.endpoint}"
    assert "does not exist: create it, or fix the s3:// URL" in _push(tmp_path, url)


def test_refused_credentials_are_named(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto checks credentials against its IAM after its first request (the bucket's
    creation): the dummy key is then unknown, as a wrong key is to S3."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "1")
    server = run_s3_server(tmp_path_factory.mktemp("aws-auth"))
    s3 = next(server)
    try:
        url = f"s3://{s3.bucket}/p?endpoint={s3.endpoint}"
        stderr = _push(tmp_path, url)
        assert "S3 refused the credentials" in stderr
        assert "InvalidAccessKeyId" in stderr
        backend = S3Backend(s3.bucket, "p", endpoint=s3.endpoint, region="us-east-1")
        with pytest.raises(StorageError, match="S3 refused the credentials"):
            backend.health()
    finally:
        server.close()
