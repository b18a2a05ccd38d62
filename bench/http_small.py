"""HTTP benchmark, many small blobs: pushes, HEADs and GETs by concurrent Python clients.

Every round starts our server (uvicorn and granian, each a fresh store) and
the CNCF distribution registry (Debian ``docker-registry``) on loopback, and
8 httpx clients (one thread and one keep-alive connection each):

* push 5,000 blobs of 4 KiB (ours: one ``POST /v1/blobs?digest=`` each; the
  registry: POST then PUT, its shortest push);
* then 1,000 HEADs and 1,000 GETs cycling over the pushed blobs.

On 2 vCPUs shared by client and server these are partly client-bound: the
same reads under C/Go load generators are in ``http_load.py``.

    .venv/bin/python bench/http_small.py                  # 5,000 blobs
    .venv/bin/python bench/http_small.py --quick          # 1,000 blobs
    .venv/bin/python bench/http_small.py --servers uvicorn --small 2000 --trials 5
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

# bench/ is a namespace package under the repo root (see ingest.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from bench._http_bench import HttpBench, main
from bench._http_common import (
    SMALL_SIZE,
    HttpConfig,
    common_options,
    http_parser,
    parse_options,
    small_blobs,
)
from bench._http_targets import Target, check_status, new_client, warm

T = TypeVar("T")


@dataclass(frozen=True)
class SmallConfig(HttpConfig):
    """Parsed command line."""

    small: int
    heads: int
    concurrency: int

    def to_json(self) -> dict[str, Any]:
        return {
            "small": self.small,
            "heads": self.heads,
            "concurrency": self.concurrency,
            **super().to_json(),
        }


def parse_args(argv: list[str] | None = None) -> SmallConfig:
    """Command line; ``--quick`` only changes the default number of blobs."""
    p = http_parser(
        "HTTP benchmark: 4 KiB pushes, HEADs and GETs, our server vs the CNCF registry.",
        quick="1,000 small blobs",
        prefault=False,
    )
    p.add_argument("--small", type=int, help="4 KiB blobs to push (default 5000)")
    p.add_argument("--heads", type=int, help="HEADs and GETs of small blobs (1000)")
    p.add_argument("--concurrency", type=int, help="concurrent clients (8)")
    counts = {"small": (5000, 1000), "heads": (1000, 1000), "concurrency": (8, 8)}
    a = parse_options(p, argv, counts)
    return SmallConfig(
        **common_options(p, a), small=a.small, heads=a.heads, concurrency=a.concurrency
    )


def run_parallel(
    clients: Sequence[httpx.Client], items: Sequence[T], fn: Callable[[httpx.Client, T], None]
) -> float:
    """Item i goes to client i % n, one thread per client; seconds until all are done.

    The clock starts when every thread is ready; the first failure stops all
    threads and is raised.
    """
    n = len(clients)
    ready = threading.Barrier(n + 1)
    failed = threading.Event()

    def work(k: int) -> None:
        ready.wait()
        try:
            for item in items[k::n]:
                if failed.is_set():
                    return
                fn(clients[k], item)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(n, thread_name_prefix="client") as pool:
        futures = [pool.submit(work, k) for k in range(n)]
        try:
            ready.wait()
            start = time.perf_counter()
            for f in futures:
                f.result()
        except BaseException:
            failed.set()  # Ctrl-C or a failure: the other threads stop after one request
            raise
        return time.perf_counter() - start


class SmallBench(HttpBench[SmallConfig]):
    """Pushes of many 4 KiB blobs, then HEADs and GETs of them, by N Python clients."""

    group = "small"
    title = "small blobs, Python clients"
    steps = ("small", "head", "get")
    units = {"small": "blobs/s", "head": "req/s", "get": "req/s"}

    def __init__(self, cfg: SmallConfig, work: Path) -> None:
        super().__init__(cfg, work)
        self.blobs: list[tuple[bytes, str]] = []
        self.stored: dict[str, list[str]] = {}
        """Per target, the refs of the blobs this round pushed (in push order)."""

    def step_label(self, step: str) -> str:
        c = self.cfg
        n = c.concurrency
        return {
            "small": f"push {c.small:,} x 4 KiB, {n} Python clients",
            "head": f"HEAD x {c.heads:,}, {n} Python clients",
            "get": f"GET 4 KiB x {c.heads:,}, {n} Python clients",
        }[step]

    def prepare_data(self) -> None:
        self.blobs = small_blobs(self.cfg.small)

    def new_round(self) -> None:
        self.stored = {}

    def run_steps(self, order: Sequence[Target], round_no: int) -> None:
        self.step_push(order)
        self.step_reads(order, "HEAD")
        self.step_reads(order, "GET")

    def _clients(self, t: Target) -> list[httpx.Client]:
        clients = [new_client(t.headers) for _ in range(self.cfg.concurrency)]
        for c in clients:
            warm(c, t)
        return clients

    def _measure(
        self, t: Target, step: str, items: Sequence[T], fn: Callable[[httpx.Client, T], None]
    ) -> None:
        """One trial: every item through ``fn`` on N fresh warm clients; rate in items/s."""
        clients = self._clients(t)

        def go() -> tuple[float, float]:
            secs = run_parallel(clients, items, fn)
            return len(items) / secs, len(items)

        try:
            self.trial(t, step, go)
        finally:
            for c in clients:
                c.close()

    def step_push(self, targets: Sequence[Target]) -> None:
        """Push every small blob with N concurrent Python clients."""
        blobs = self.blobs
        for t in targets:
            refs: list[str] = [""] * len(blobs)

            def push(client: httpx.Client, i: int, t: Target = t, refs: list[str] = refs) -> None:
                data, sha = blobs[i]
                refs[i] = t.upload_small(client, data, sha)

            self._measure(t, "small", range(len(blobs)), push)
            if all(refs):
                self.stored[t.key] = refs

    def step_reads(self, targets: Sequence[Target], method: str) -> None:
        """HEAD or GET of --heads small blobs (cycling) with N concurrent Python clients."""
        step = "head" if method == "HEAD" else "get"

        def one(client: httpx.Client, url: str) -> None:
            r = check_status(client.request(method, url), 200)
            if int(r.headers.get("content-length", -1)) != SMALL_SIZE or (
                method == "GET" and len(r.content) != SMALL_SIZE
            ):
                raise RuntimeError(f"{method} {url}: wrong length")

        for t in targets:
            refs = self.stored.get(t.key)
            if not refs:
                continue
            urls = [t.blob_url(refs[i % len(refs)]) for i in range(self.cfg.heads)]
            self._measure(t, step, urls, one)


if __name__ == "__main__":
    main(SmallBench, parse_args)
