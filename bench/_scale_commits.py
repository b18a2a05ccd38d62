"""bench/scale.py, part ``commits``: commit throughput of two replicas on one PostgreSQL.

Two ``artifactstore serve`` processes (one worker each) over one new
PostgreSQL database and one shared storage directory, authentication on (an
admin token on every request). ``--writers`` client threads, alternating
between the replicas, each commit small packages for ``--commit-seconds``,
in two modes run one after the other:

* ``upload+commit``: a fresh 64-byte blob (``POST /v1/blobs``), then the
  manifest (``PUT /v1/packages/...``, JSON): a small push, two requests;
* ``commit only``: a manifest referencing a blob uploaded once before: the
  commit path alone, one request.

Commits per second, and the CPU seconds per commit of the two servers and of
the client: all share the machine's 2 cores, so the figure is CPU-bound. The
CPU bound printed beside it is what the 2 cores could do at the CPU per commit
measured in the same run (2 / (server + client CPU seconds per commit), the
PostgreSQL server's own CPU not counted), and the ratio is the rate's share of it.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import blake3
import httpx
from bench._common import child_env, render_table, venv_cli
from bench._services import free_port, start_service, stop_service, tree_cpu_seconds

from artifactstore.config import Settings
from artifactstore.model.identity import Digest, Namespace, PackageName, Version
from artifactstore.model.manifest import FileEntry, Manifest
from artifactstore.model.paths import PackagePath
from artifactstore.store import Store

__all__ = ["commits_part"]

ARTIFACTSTORE = venv_cli("artifactstore")


def _entry(data: bytes, path: str = "f.bin") -> FileEntry:
    b3 = Digest.parse(f"blake3:{blake3.blake3(data).hexdigest()}")
    sha = Digest.parse(f"sha256:{hashlib.sha256(data).hexdigest()}")
    return FileEntry(PackagePath(path), len(data), "application/octet-stream", b3, sha)


def small_manifest(writer: int, version: str, data: bytes) -> Manifest:
    """``bench/wWRITER:VERSION``: one file, ``data``, and the writer in its metadata."""
    return Manifest.build(
        Namespace("bench"),
        PackageName(f"w{writer}"),
        Version(version),
        [_entry(data)],
        created="2026-12-04T00:00:00Z",
        producer="bench",
        metadata={"writer": str(writer)},
    )


class Replicas:
    """Two ``serve`` processes on one database and one storage directory."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.env = child_env(
            ["ARTIFACTSTORE_"],
            ARTIFACTSTORE_DATABASE_URL=database_url,
            ARTIFACTSTORE_STORAGE_URL=f"file://{root / 'shared' / 'storage'}",
            ARTIFACTSTORE_COLD_STORAGE_URL=f"file://{root / 'shared' / 'cold'}",
        )
        settings = Settings(
            home=root / "admin",
            database_url=database_url,
            storage_url=self.env["ARTIFACTSTORE_STORAGE_URL"],
            cold_storage_url=self.env["ARTIFACTSTORE_COLD_STORAGE_URL"],
        )
        with Store.from_config(settings) as store:
            _, self.token = store.create_token("bench", ["admin"], actor="bench")
        self.ports = [free_port(), free_port()]
        serve = [str(ARTIFACTSTORE), "serve", "--host", "127.0.0.1", "--workers", "1"]
        self.procs = [
            start_service(
                [*serve, "--port", str(port)],
                {**self.env, "ARTIFACTSTORE_HOME": str(root / f"replica{i}")},
                root / f"replica{i}.log",
            )
            for i, port in enumerate(self.ports)
        ]
        for port in self.ports:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica on {port} did not become ready")
                time.sleep(0.1)

    def cpu(self) -> float:
        return sum(tree_cpu_seconds(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            stop_service(p)


def _writer(
    base: str, token: str, mode: str, shared: bytes, stop: float, n: int, counts: list[int]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        i = 0
        while time.monotonic() < stop:
            data = shared if mode == "commit only" else secrets.token_bytes(64)
            if mode != "commit only":
                r = c.post("/v1/blobs", params={"namespace": "bench"}, content=data)
                assert r.status_code == 201, r.text
            m = small_manifest(n, f"{mode[0]}{i}", data)
            r = c.put(
                f"/v1/packages/bench/w{n}/{m.version}",
                content=m.to_json(),
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 201, r.text
            counts[n] += 1
            i += 1


def _run(replicas: Replicas, mode: str, writers: int, seconds: float) -> dict[str, Any]:
    shared = b"a blob every commit-only package references\n"
    with httpx.Client(
        base_url=f"http://127.0.0.1:{replicas.ports[0]}",
        headers={"Authorization": f"Bearer {replicas.token}"},
    ) as c:
        assert c.post("/v1/blobs", params={"namespace": "bench"}, content=shared).status_code == 201
    counts = [0] * writers
    cpu0, client0 = replicas.cpu(), time.process_time()
    start = time.monotonic()
    stop = start + seconds
    threads = [
        threading.Thread(
            target=_writer,
            args=(
                f"http://127.0.0.1:{replicas.ports[n % 2]}",
                replicas.token,
                mode,
                shared,
                stop,
                n,
                counts,
            ),
        )
        for n in range(writers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    commits = sum(counts)
    server_cpu = replicas.cpu() - cpu0
    client_cpu = time.process_time() - client0
    return {
        "mode": mode,
        "commits": commits,
        "seconds": elapsed,
        "commits_per_s": commits / elapsed,
        "server_cpu_ms_per_commit": 1000 * server_cpu / max(1, commits),
        "client_cpu_ms_per_commit": 1000 * client_cpu / max(1, commits),
        "cpu_busy_pct": 100 * (server_cpu + client_cpu) / (2 * elapsed),
        "cpu_bound_per_s": 2 * commits / max(1e-9, server_cpu + client_cpu),
    }


def commits_part(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from bench.scale import pg_database

    out: list[dict[str, Any]] = []
    with pg_database(args.postgresql_url, "commits") as url:
        replicas = Replicas(root / "commits", url)
        try:
            for mode in ("upload+commit", "commit only"):
                out.append(_run(replicas, mode, args.writers, args.commit_seconds))
        finally:
            replicas.stop()
    rows = [
        [
            r["mode"],
            str(r["commits"]),
            f"{r['commits_per_s']:,.0f}",
            f"{r['server_cpu_ms_per_commit']:.2f}",
            f"{r['client_cpu_ms_per_commit']:.2f}",
            f"{r['cpu_busy_pct']:.0f}%",
            f"{r['cpu_bound_per_s']:,.0f}",
            f"{r['commits_per_s'] / r['cpu_bound_per_s']:.2f}",
            "met" if r["commits_per_s"] >= 500 else "MISSED",
        ]
        for r in out
    ]
    print(f"\ncommits: {args.writers} writers over 2 replicas (1 worker each), PostgreSQL")
    print(
        render_table(
            [
                "mode",
                "commits",
                "commits/s",
                "server CPU ms/commit",
                "client CPU ms/commit",
                "2 cores busy",
                "CPU bound/s",
                "of bound",
                ">= 500/s",
            ],
            rows,
        )
    )
    return {"runs": out}
