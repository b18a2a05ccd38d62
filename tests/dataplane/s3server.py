"""A real S3 server for the tests: moto's server mode, one process per test session.

It listens on a free loopback port; the tests talk to it over HTTP with the
same boto3 client production uses. Credentials are dummies set for the
session, and the AWS config files point nowhere, so no test reads the
user's ``~/.aws``. Where moto cannot start the S3 tests skip, except on CI
(``CI`` set), where a missing server is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

BUCKET = "artifactstore-tests"

#: What the S3 client of a test reads instead of the user's AWS configuration.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the S3 tests need moto's server on CI: {reason}")
    pytest.skip(f"no S3 server for the S3 tests: {reason}")


def _wait_ready(proc: subprocess.Popen[bytes], endpoint: str, timeout: float) -> str | None:
    """None once the server answers; else why it never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"moto's server exited with status {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return None
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return f"moto's server did not answer within {timeout:.0f} s"


def run_s3_server(home: Path) -> Generator[S3Server, None, None]:
    """Start moto's server, make the test bucket, yield, stop it (a session fixture's body)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        _unavailable(f"cannot import moto's server ({exc}); install the dev extra")
    env = {**AWS_ENV, "AWS_CONFIG_FILE": str(home / "config")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "credentials")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = (home / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    try:
        why = _wait_ready(proc, endpoint, timeout=30)
        if why is not None:
            _unavailable(why)
        boto3.session.Session().client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield S3Server(endpoint, BUCKET)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
