"""bench/scale.py, part ``s3``, through the API: ``artifactstore serve`` on the S3 backend
against boto3 straight to the same moto server, same run (issue 18: >= 0.8x each way).

* **upload**: the ``--s3-bytes`` file POSTed to ``/v1/blobs?digest=blake3:...``
  in one request by httpx, streamed as 1 MiB slices (the HTTP benches' client,
  ``Ours``; the BLAKE3 digest, as the project's client sends, lets the server
  stream the bytes to the blob's own key), against boto3 ``upload_file`` with
  its default ``TransferConfig`` (8 MiB parts, 10 at once). Each trial
  uploads to a new key prefix (a fresh server whose ``STORAGE_URL`` names
  it), so no trial finds its blob already stored.
* **download**: ``GET /v1/blobs/{digest}`` read by httpx, the server sending
  the bytes ("proxied"), and the same GET to a second server started with
  ``PRESIGN_DOWNLOADS`` whose 307 the client follows to moto ("presigned":
  both are through the API), against boto3 ``download_file`` (default
  ``TransferConfig``: parallel ranged GETs into a file) and against one plain
  streamed ``GetObject`` read into nothing (the least a client can do with the
  same library), and against the API leg's own client (httpx, ``iter_raw``)
  reading the object straight from moto through a presigned URL: the fair
  reference for both of ours, since httpx reads a socket more slowly than
  urllib3 here. The presigned server's upload is timed too (one more sample
  of the upload).
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

import blake3
import httpx
from bench._common import MB, child_env, make_small_tree, timed, venv_cli
from bench._http_targets import Ours, check_status, new_client, warm
from boto3.s3.transfer import TransferConfig

__all__ = ["api_rows"]

SRC = Path(__file__).resolve().parent.parent / "src"


class OursOnS3(Ours):
    """``artifactstore serve`` (uvicorn, one worker) whose hot storage is the bucket,
    under a new key prefix at every start; this checkout's sources."""

    def __init__(
        self,
        work: Path,
        endpoint: str,
        bucket: str,
        credentials: dict[str, str],
        *,
        presign: bool = False,
    ) -> None:
        super().__init__(work, work, "uvicorn", 1, "--asgi")
        self.key = "s3api-presign" if presign else "s3api"
        self.label = f"ours (S3 hot storage{', presigned GETs' if presign else ''})"
        self.endpoint = endpoint
        self.bucket = bucket
        self.credentials = credentials
        self.presign = presign
        self.blake3 = ""  # of the file upload_oneshot sends (set by the caller)

    def env(self) -> dict[str, str]:
        prefix = f"{self.key}{self.starts}"
        url = f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1"
        return {
            **super().env(),
            **self.credentials,
            "ARTIFACTSTORE_STORAGE_URL": url,
            "PYTHONPATH": str(SRC),
            **({"ARTIFACTSTORE_PRESIGN_DOWNLOADS": "600s"} if self.presign else {}),
            # moto lists every multipart upload as initiated in 2010, so serve's
            # minutely sweep of uploads older than an hour would abort one in flight.
            "ARTIFACTSTORE_UPLOAD_SWEEP_INTERVAL": "0",
        }

    def oneshot_digest(self, sha: str) -> str:
        """The BLAKE3 digest, as ``artifactstore push`` names it: it decides the key."""
        return f"blake3:{self.blake3}"

    def download(self, client: httpx.Client, ref: str, size: int, sha: str | None) -> None:
        """As ``Ours``; with ``presign``, the 307 is followed (to moto, which sends no
        Docker-Content-Digest: the size is checked, and the digest was at upload)."""
        if not self.presign:
            super().download(client, ref, size, sha)
            return
        with client.stream("GET", self.blob_url(ref)) as moved:
            moved.read()
            check_status(moved, 307)
            location = moved.headers["location"]
        with client.stream("GET", location) as r:
            if r.status_code != 200:
                r.read()
                check_status(r, 200)
            got = sum(len(piece) for piece in r.iter_raw())
        if got != size:
            raise RuntimeError(f"{self.label}: downloaded {got} bytes, expected {size}")


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


def _mbps(size: int, seconds: list[float]) -> str:
    return ", ".join(f"{size / s / MB:,.0f}" for s in seconds)


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
    content = big.read_bytes()
    sha = hashlib.sha256(content).hexdigest()
    b3 = blake3.blake3(content, max_threads=blake3.blake3.AUTO).hexdigest()
    del content
    out = work / "down.bin"
    server = OursOnS3(work, moto.endpoint, bucket, credentials)
    presigning = OursOnS3(work, moto.endpoint, bucket, credentials, presign=True)
    server.blake3 = presigning.blake3 = b3
    runs: dict[str, list[float]] = {}

    def keep(name: str, seconds: float) -> None:
        runs.setdefault(name, []).append(seconds)

    def through(target: OursOnS3, down: str) -> None:
        target.start()
        try:
            with new_client(target.headers) as http:
                warm(http, target)
                start = time.perf_counter()
                ref = target.upload_oneshot(http, src, sha)
                keep("api up", time.perf_counter() - start)
                keep(down, timed(lambda: target.download(http, ref, size, sha)))
        finally:
            target.stop()

    def one_trial(trial: int) -> None:  # ours (proxied, presigned), then boto3 straight
        through(server, "api down")
        through(presigning, "api down presigned")
        key = f"direct/{trial}"
        keep("boto up", timed(lambda: client.upload_file(str(big), bucket, key, Config=default)))
        down = timed(lambda: client.download_file(bucket, key, str(out), Config=default))
        keep("boto down", down)
        out.unlink()
        keep("boto get", timed(lambda: _read_all(client, bucket, key)))
        keep("httpx get", timed(lambda: _read_httpx(client, bucket, key, size)))
        client.delete_object(Bucket=bucket, Key=key)

    try:
        for trial in range(trials):
            one_trial(trial)
        for name, seconds in runs.items():
            print(f"  {name}: {_mbps(size, seconds)} MB/s (trials in order)")
        best = {name: min(seconds) for name, seconds in runs.items()}
        mib = f"{size >> 20} MiB"
        rows = [_row(f"{mib} up", size, best["api up"], best["boto up"], "upload_file")]
        for how, ours in (("proxied", "api down"), ("presigned 307", "api down presigned")):
            for direct, name in (
                ("boto down", "download_file"),
                ("boto get", "one GET"),
                ("httpx get", "one GET by httpx"),
            ):
                rows.append(_row(f"{mib} down, {how}", size, best[ours], best[direct], name))
        server.start()
        rows.append(_small_files(server, moto, work, files))
    finally:
        server.stop()
        presigning.stop()
    return rows


def _read_all(client: Any, bucket: str, key: str) -> None:
    for _ in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        pass


def _read_httpx(client: Any, bucket: str, key: str, size: int) -> None:
    """The object read by the API leg's own client (httpx, ``iter_raw``) straight from
    moto through a presigned URL: the same client's reference for the API's GETs."""
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
    )
    with new_client() as http, http.stream("GET", url) as r:
        got = sum(len(piece) for piece in check_status(r, 200).iter_raw())
    if got != size:
        raise RuntimeError(f"httpx read {got} bytes of {key}, expected {size}")


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
