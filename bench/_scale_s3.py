"""bench/scale.py, part ``s3``: bytes on S3 (a moto server on a free loopback port).

Figures, all against the same moto server in the same run, best of 2 trials
(``--s3-trials``: of the API and library legs):

* **client contest**: boto3 (what the S3 backend uses) against obstore (the
  Rust ``object_store`` under Python, PyPI ``obstore``, the ``bench`` extra):
  a ``--s3-bytes`` object (1 GiB) PUT from a file (multipart, 8 MiB parts,
  each client's default concurrency: boto3 10, obstore 12) and GET streamed
  into a hash; ``--s3-small`` 4 KiB PUTs one after another, and 16 at once
  (boto3 on 16 threads, obstore on asyncio).
* **the library**: ``Store.push``/``Store.pull`` of the same 1 GiB with the
  S3 backend as hot storage (assembled by hand: see ``_library``), against
  boto3 straight to the bucket; ``--s3-files`` small files pushed, with the
  S3 requests it took (counted in moto's request log).
* **through the API**: the same 1 GiB uploaded to and downloaded from an
  ``artifactstore serve`` whose ``STORAGE_URL`` is the bucket, against boto3
  straight to the bucket (target >= 0.8x each way); ``--s3-files`` small files
  pushed by the project's client, with the S3 requests it took
  (``bench/_scale_s3_api.py``).

``--s3-legs api,library,contest`` picks legs (all by default).

moto keeps objects in memory and is a Python server: it, not the client,
is likely the limit of the large transfers (its CPU share is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
from bench._common import MB, make_small_tree, render_table, timed, write_random_file
from bench._scale_s3_api import api_rows
from bench._services import free_port, start_service, stop_service, tree_cpu_seconds
from boto3.s3.transfer import TransferConfig

__all__ = ["s3_part"]

BUCKET = "bench"
PART = 8 << 20
SMALL = 4096
TRIALS = 2
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class Moto:
    """moto's S3 server on a free port, its request log counted."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "moto.log"
        self.proc = start_service(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            {**os.environ, **CREDENTIALS},
            self.log_path,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        self.boto().create_bucket(Bucket=BUCKET)

    def boto(self) -> Any:
        return boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        ).client("s3", endpoint_url=self.endpoint)

    def requests(self) -> int:
        """Requests moto has logged so far (one werkzeug line each)."""
        text = self.log_path.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if '" ' in line and "HTTP/1.1" in line)

    def cpu(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        stop_service(self.proc)


def _obstore(moto: Moto) -> Any:
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=moto.endpoint,
        region="us-east-1",
        access_key_id="bench",
        secret_access_key="bench",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def _best(fn: Callable[[], float], trials: int = TRIALS) -> float:
    return min(fn() for _ in range(trials))


def _contest(moto: Moto, big: Path, size: int, small: int) -> list[list[str]]:
    client = moto.boto()
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
    expected = hashlib.sha256(big.read_bytes()).hexdigest() if size <= (1 << 31) else ""

    def boto_put() -> float:
        return timed(lambda: client.upload_file(str(big), BUCKET, "big-boto", Config=config))

    def boto_get() -> float:
        def read() -> None:
            h = hashlib.sha256()
            for chunk in client.get_object(Bucket=BUCKET, Key="big-boto")["Body"].iter_chunks(
                1 << 20
            ):
                h.update(chunk)
            assert not expected or h.hexdigest() == expected

        return timed(read)

    rows: list[list[str]] = []
    figures: dict[str, float] = {}
    figures["boto3 PUT"] = _best(boto_put)
    figures["boto3 GET"] = _best(boto_get)
    client.delete_object(Bucket=BUCKET, Key="big-boto")
    have_obstore = True
    try:
        import obstore

        store = _obstore(moto)

        def ob_put() -> float:
            return timed(lambda: obstore.put(store, "big-ob", big, chunk_size=PART))

        def ob_get() -> float:
            def read() -> None:
                h = hashlib.sha256()
                for chunk in obstore.get(store, "big-ob").stream(min_chunk_size=1 << 20):
                    h.update(chunk)
                assert not expected or h.hexdigest() == expected

            return timed(read)

        figures["obstore PUT"] = _best(ob_put)
        figures["obstore GET"] = _best(ob_get)
        obstore.delete(store, "big-ob")
    except ImportError:
        have_obstore = False
    for op in ("PUT", "GET"):
        b = size / figures[f"boto3 {op}"] / MB
        o = size / figures[f"obstore {op}"] / MB if have_obstore else None
        rows.append(
            [
                f"{size >> 20} MiB {op}",
                f"{b:,.0f} MB/s",
                f"{o:,.0f} MB/s" if o else "-",
                f"{o / b:.2f}" if o else "-",
            ]
        )
    payload = os.urandom(SMALL)

    def boto_small(threads: int) -> float:
        keys = [f"s/boto-{threads}-{i}" for i in range(small)]
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            list(pool.map(lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=payload), keys))
            return time.perf_counter() - start

    def ob_small(concurrency: int) -> float:
        import obstore

        store = _obstore(moto)
        keys = [f"s/ob-{concurrency}-{i}" for i in range(small)]

        async def run() -> None:
            gate = asyncio.Semaphore(concurrency)

            async def one(key: str) -> None:
                async with gate:
                    await obstore.put_async(store, key, payload)

            await asyncio.gather(*(one(k) for k in keys))

        return timed(lambda: asyncio.run(run()))

    for conc in (1, 16):
        b = small / min(boto_small(conc) for _ in range(TRIALS))
        o = small / min(ob_small(conc) for _ in range(TRIALS)) if have_obstore else None
        rows.append(
            [
                f"{small:,} x 4 KiB PUT, {conc} at once",
                f"{b:,.0f}/s",
                f"{o:,.0f}/s" if o else "-",
                f"{o / b:.2f}" if o else "-",
            ]
        )
    return rows


def _library(
    moto: Moto, root: Path, big: Path, size: int, files: int, trials: int
) -> list[list[str]]:
    """Store.push and Store.pull with the S3 backend as hot storage, built by hand (this
    build's ``STORAGE_URL`` refuses ``s3://`` for hot storage: its upload staging is
    local): the 1 GiB file against boto3 straight to the bucket, and a tree of
    ``files`` small files with the S3 requests moto logged for it."""
    from artifactstore.config import Settings
    from artifactstore.dataplane.backends.local import LocalBackend
    from artifactstore.dataplane.backends.local_staging import LocalStaging
    from artifactstore.dataplane.backends.s3 import S3Backend
    from artifactstore.dataplane.blobs import DataPlane
    from artifactstore.store import Store

    os.environ.update(CREDENTIALS)
    settings = Settings(home=root / "lib")
    hot = S3Backend(BUCKET, "store", endpoint=moto.endpoint, region="us-east-1", name="local")
    cold = LocalBackend(root / "lib" / "cold", name="cold")
    local = LocalBackend(root / "lib" / "staging", name="staging")
    plane = DataPlane(hot, primary="blake3", cold=cold, pack_max=settings.pack_max_bytes)
    staging = LocalStaging(local, root / "lib" / "staging")
    client = moto.boto()
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
    rows: list[list[str]] = []
    store = Store(settings, plane, staging, create=True, clock=time.time)
    try:
        store.db  # noqa: B018  (waits for the store to open)
        direct_put = _best(
            lambda: timed(lambda: client.upload_file(str(big), BUCKET, "direct", Config=config)),
            trials,
        )
        pushes = iter(range(trials))
        lib_put = _best(
            lambda: timed(lambda: store.push(f"bench/big:{next(pushes)}", [big])), trials
        )

        def direct_read() -> None:
            for _ in client.get_object(Bucket=BUCKET, Key="direct")["Body"].iter_chunks(1 << 20):
                pass

        direct_get = _best(lambda: timed(direct_read), trials)
        pulls = iter(range(trials))
        lib_get = _best(
            lambda: timed(lambda: store.pull("bench/big:0", root / "lib" / f"out{next(pulls)}")),
            trials,
        )
        for op, lib, direct in (("PUT", lib_put, direct_put), ("GET", lib_get, direct_get)):
            rows.append(
                [
                    f"{size >> 20} MiB {op}",
                    f"{size / lib / MB:,.0f} MB/s",
                    f"{size / direct / MB:,.0f} MB/s",
                    f"{direct / lib:.2f}",
                ]
            )
        tree = make_small_tree(root / "lib" / "tree", files)
        before = moto.requests()
        took = timed(lambda: store.push("bench/tree:1", [tree.root]))
        used = moto.requests() - before
        rows.append(
            [
                f"{files:,} small files ({tree.total_bytes / MB:,.0f} MB) push",
                f"{files / took:,.0f} files/s",
                f"{used:,} S3 requests",
                f"{used / files:.3f} per file",
            ]
        )
    finally:
        store.close()
    return rows


def s3_part(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    work = root / "s3"
    work.mkdir()
    big = work / "big.bin"
    write_random_file(big, args.s3_bytes)
    legs = set(args.s3_legs.split(","))
    out: dict[str, Any] = {}
    moto = Moto(work)
    try:
        if "api" in legs:
            cpu, started = moto.cpu(), time.perf_counter()
            out["api"] = api_rows(
                moto, BUCKET, work, big, args.s3_files, args.s3_trials, CREDENTIALS
            )
            out["moto_cores_api"] = (moto.cpu() - cpu) / (time.perf_counter() - started)
            print("\nthrough the API (artifactstore serve, S3 hot storage) against boto3 straight")
            print(render_table(["transfer", "API", "boto3 direct", "ratio"], out["api"]))
            print(f"moto's server used {out['moto_cores_api']:.2f} cores during the API leg")
        if "library" in legs:
            out["library"] = _library(moto, work, big, args.s3_bytes, args.s3_files, args.s3_trials)
            print("\nthe library (Store.push / Store.pull, S3 as hot storage) against boto3")
            print(render_table(["transfer", "library", "boto3 direct", "ratio"], out["library"]))
        if "contest" in legs:
            cpu, started = moto.cpu(), time.perf_counter()
            out["contest"] = _contest(moto, big, args.s3_bytes, args.s3_small)
            out["moto_cores"] = (moto.cpu() - cpu) / (time.perf_counter() - started)
            print("\nS3 clients against one moto server (best of 2; ratio = obstore / boto3)")
            print(render_table(["transfer", "boto3", "obstore", "ratio"], out["contest"]))
            print(f"moto's server used {out['moto_cores']:.2f} cores during the contest")
    finally:
        moto.stop()
    return out
