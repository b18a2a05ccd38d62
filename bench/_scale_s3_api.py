"""bench/scale.py, part ``s3``, through the API: ``artifactstore serve`` on the S3 backend
against boto3 straight to the same moto server, same run (issue 18: >= 0.8x each way).

* **upload**: the ``--s3-bytes`` file POSTed to ``/v1/blobs`` in one request by
  httpx, streamed as 1 MiB slices (the HTTP benches' client, ``Ours``), against
  boto3 ``upload_file`` with its default ``TransferConfig`` (8 MiB parts, 10 at
  once). Each trial uploads to a new key prefix (a fresh server whose
  ``STORAGE_URL`` names it), so no trial finds its blob already stored.
* **download**: ``GET /v1/blobs/{digest}`` read by httpx, against boto3
  ``download_file`` (default ``TransferConfig``: parallel ranged GETs into a
  file) and against one plain streamed ``GetObject`` read into nothing (the
  least a client can do with the same library).
* **small files**: ``--s3-files`` small files pushed by the project's client
  (``artifactstore --server URL push``), with the S3 requests moto logged.

Every ratio is ours / direct (higher is better for us): time direct / time ours.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import MB, child_env, make_small_tree, timed, venv_cli
from bench._http_targets import Ours, new_client, warm
from boto3.s3.transfer import TransferConfig

__all__ = ["api_rows"]

SRC = Path(__file__).resolve().parent.parent / "src"


class OursOnS3(Ours):
    """``artifactstore serve`` (uvicorn, one worker) whose hot storage is the bucket,
    under a new key prefix at every start; this checkout's sources."""

    def __init__(self, work: Path, endpoint: str, bucket: str, credentials: dict[str, str]) -> None:
        super().__init__(work, work, "uvicorn", 1, "--asgi")
        self.key = "s3api"
        self.label = "ours (S3 hot storage)"
        self.endpoint = endpoint
        self.bucket = bucket
        self.credentials = credentials

    def env(self) -> dict[str, str]:
        url = f"s3://{self.bucket}/api{self.starts}?endpoint={self.endpoint}&region=us-east-1"
        return {
            **super().env(),
            **self.credentials,
            "ARTIFACTSTORE_STORAGE_URL": url,
            "PYTHONPATH": str(SRC),
        }


class _FileSlices:
    """The big file as 1 MiB memoryview slices (PERF-NOTES: never one large body)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    def slices(self, offset: int, length: int) -> Any:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            left = length
            while left > 0:
                n = f.readinto(view[: min(len(buf), left)])
                if not n:
                    raise RuntimeError(f"{self.path} is shorter than expected")
                yield view[:n]
                left -= n


def _row(what: str, size: int, ours: float, direct: float, name: str) -> list[str]:
    return [
        what,
        f"{size / ours / MB:,.0f} MB/s",
        f"{size / direct / MB:,.0f} MB/s ({name})",
        f"{direct / ours:.2f}",
    ]


def api_rows(
    moto: Any,
    bucket: str,
    work: Path,
    big: Path,
    files: int,
    trials: int,
    credentials: dict[str, str],
) -> list[list[str]]:
    """The rows of the API leg: upload, download (two direct references), small files."""
    client = moto.boto()
    default = TransferConfig()
    size = big.stat().st_size
    src = _FileSlices(big)
    sha = hashlib.sha256(big.read_bytes()).hexdigest()
    out = work / "down.bin"
    server = OursOnS3(work, moto.endpoint, bucket, credentials)
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(seconds, best.get(name, seconds))

    def one_trial(trial: int) -> None:  # ours, then boto3 straight
        server.start()
        with new_client(server.headers) as http:
            warm(http, server)
            start = time.perf_counter()
            ref = server.upload_oneshot(http, src, sha)
            keep("api up", time.perf_counter() - start)
            keep("api down", timed(lambda: server.download(http, ref, size, sha)))
        key = f"direct/{trial}"
        keep("boto up", timed(lambda: client.upload_file(str(big), bucket, key, Config=default)))
        down = timed(lambda: client.download_file(bucket, key, str(out), Config=default))
        keep("boto down", down)
        out.unlink()
        keep("boto get", timed(lambda: _read_all(client, bucket, key)))
        client.delete_object(Bucket=bucket, Key=key)

    try:
        for trial in range(trials):
            one_trial(trial)
        rows = [
            _row(f"{size >> 20} MiB up", size, best["api up"], best["boto up"], "upload_file"),
            _row(
                f"{size >> 20} MiB down", size, best["api down"], best["boto down"], "download_file"
            ),
            _row(f"{size >> 20} MiB down", size, best["api down"], best["boto get"], "one GET"),
        ]
        rows.append(_small_files(server, moto, work, files))
    finally:
        server.stop()
    return rows


def _read_all(client: Any, bucket: str, key: str) -> None:
    for _ in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        pass


def _small_files(server: OursOnS3, moto: Any, work: Path, files: int) -> list[str]:
    """``artifactstore push`` of ``files`` small files to the server: files/s, S3 requests."""
    tree = make_small_tree(work / "api-tree", files)
    cli = str(venv_cli("artifactstore"))
    token = server.headers["Authorization"].split()[-1]
    env = child_env(["ARTIFACTSTORE_"], ARTIFACTSTORE_TOKEN=token, PYTHONPATH=str(SRC))
    argv = [cli, "--server", server.base, "push", "bench/api-tree:1", str(tree.root)]
    before = moto.requests()
    took = timed(_run(argv, env))
    used = moto.requests() - before
    return [
        f"{files:,} small files ({tree.total_bytes / MB:,.0f} MB) push, client",
        f"{files / took:,.0f} files/s",
        f"{used:,} S3 requests",
        f"{used / files:.3f} per file",
    ]


def _run(argv: list[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:4])} exited {done.returncode}: {done.stderr}")

    return run
