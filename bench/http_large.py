"""HTTP benchmark, large blobs: uploads and downloads, ours against the CNCF registry.

Every round starts our server (uvicorn and granian, each a fresh store) and
the CNCF distribution registry (Debian ``docker-registry``) on loopback,
both fsyncing as they do by default, and measures with httpx for both:

* a large blob (1 GiB, from the page cache) pushed in one request, then in
  8 MiB chunks (our upload session's PATCHes, the registry's PATCH and PUT);
* the blob each target stored last downloaded with httpx, and with curl into
  /dev/null (a client whose per-byte cost is small).

A "raw sink" target (a raw-socket server that discards uploads and
``sendfile``s downloads) is measured too, interleaved like the others. For
uploads it is the client's ceiling: when ours and the registry both sit near
it, the client is the bottleneck and the ratio says little about the servers.
For downloads it is only a reference (one Python thread per connection; the
registry and granian have beaten it): httpx's reading is the limit there.

    .venv/bin/python bench/http_large.py                  # 1 GiB
    .venv/bin/python bench/http_large.py --quick          # 256 MiB
    .venv/bin/python bench/http_large.py --servers uvicorn --trials 3 --json out.json
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# bench/ is a namespace package under the repo root (see ingest.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from bench._common import CHUNK, MB, MiB, settle, write_random_file
from bench._http_bench import HttpBench, main
from bench._http_common import (
    HttpConfig,
    common_options,
    http_parser,
    parse_options,
    size_label,
    version_of,
)
from bench._http_targets import (
    OCTETS,
    Source,
    Target,
    check_status,
    new_client,
    source_sha256,
    stream_body,
    warm,
)

# --------------------------------------------------------------------------- data


class FileSource:
    """A file read with 1 MiB ``readinto`` (from the page cache: it is read once first)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def slices(self, offset: int, length: int) -> Iterator[memoryview]:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            left = length
            while left > 0:
                n = f.readinto(view[: min(CHUNK, left)])
                if not n:
                    raise RuntimeError(f"{self.path} is shorter than {offset + length} bytes")
                yield view[:n]
                left -= n

    def stamp(self, nonce: bytes) -> None:
        """Overwrite the first bytes: new content (new digests), same pages in the cache."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, nonce, 0)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- raw sink

SINK_SCRIPT = r"""
import os, socket, sys, threading

def serve(conn, path):
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    head = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            raw, _, rest = head.partition(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            head = rest[length:]
            left = length - min(length, len(rest))
            while left > 0:
                n = conn.recv_into(view[: min(left, len(buf))])
                if not n:
                    return
                left -= n
            if method == "GET" and target == "/blob":
                size = os.path.getsize(path)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % size)
                with open(path, "rb") as f:
                    sent = 0
                    while sent < size:
                        sent += os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)
            else:
                status = b"200 OK" if method in ("GET", "HEAD") else b"201 Created"
                conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")

def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, path), daemon=True).start()

main()
"""


class Sink(Target):
    """A raw-socket server that discards bodies (the client's upload ceiling), sendfiles GETs."""

    key = "sink"
    label = "raw sink"
    steps = ("oneshot", "download", "curl_download")

    def __init__(self, work: Path, logs: Path, big: Path) -> None:
        super().__init__(work, logs)
        self.big = big

    def measures(self, step: str) -> bool:
        return step in self.steps

    def argv(self) -> list[str]:
        return [sys.executable, "-c", SINK_SCRIPT, str(self.port), str(self.big)]

    def ready_path(self) -> str:
        return "/ready"

    def upload_oneshot(self, client: httpx.Client, src: Source, sha: str) -> str:
        r = client.post(
            f"{self.base}/upload",
            content=stream_body(src, 0, src.size),
            headers={"Content-Length": str(src.size), "Content-Type": OCTETS},
        )
        check_status(r, 201)
        return "blob"

    def blob_url(self, ref: str) -> str:
        return f"{self.base}/blob"


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class LargeConfig(HttpConfig):
    """Parsed command line."""

    size: int
    chunk: int
    sink: bool

    def to_json(self) -> dict[str, Any]:
        return {"size_bytes": self.size, "chunk_bytes": self.chunk, **super().to_json()}


def parse_args(argv: list[str] | None = None) -> LargeConfig:
    """Command line; ``--quick`` only changes the default size."""
    p = http_parser(
        "HTTP benchmark: large uploads and downloads, our server vs the CNCF registry.",
        quick="256 MiB",
    )
    p.add_argument("--size-mib", type=int, help="large blob in MiB (default 1024)")
    p.add_argument("--chunk-mib", type=int, help="chunked upload PATCH size (8)")
    p.add_argument(
        "--no-sink",
        dest="sink",
        action="store_false",
        help="skip the raw-sink rows (discards uploads: the client's ceiling; "
        "sendfiles downloads: a reference)",
    )
    a = parse_options(p, argv, {"size_mib": (1024, 256), "chunk_mib": (8, 8)})
    return LargeConfig(
        **common_options(p, a), size=a.size_mib * MiB, chunk=a.chunk_mib * MiB, sink=a.sink
    )


# --------------------------------------------------------------------------- bench


class LargeBench(HttpBench[LargeConfig]):
    """One-shot and chunked uploads of one large file, then downloads of what was stored."""

    group = "large"
    title = "large uploads and downloads"
    steps = ("oneshot", "chunked", "download", "curl_download")
    units = dict.fromkeys(steps, "MB/s")

    def __init__(self, cfg: LargeConfig, work: Path) -> None:
        super().__init__(cfg, work)
        self.big = FileSource(work / "big.bin", cfg.size)
        self.curl = shutil.which("curl")
        self.refs: dict[str, dict[str, str]] = {}
        """Per target, what the round stored: upload mode -> ref."""
        self.contents: dict[str, tuple[bytes, str]] = {}
        """This round's contents: mode -> (nonce, sha256 hex)."""

    @staticmethod
    def scratch_bytes(cfg: LargeConfig) -> int:
        stores = len(cfg.servers) + (1 if cfg.peer else 0)
        return cfg.size * (1 + 2 * stores)

    def find_more_tools(self) -> None:
        if self.cfg.sink:
            self.reference = Sink(self.work, self.logs, self.big.path)
        if self.curl is None:
            self.skipped["curl_download"] = "curl not found; `apt-get install -y curl`"
        else:
            self.versions["curl"] = version_of([self.curl, "--version"])

    def step_label(self, step: str) -> str:
        size = size_label(self.cfg.size)
        return {
            "oneshot": f"upload {size} one-shot",
            "chunked": f"upload {size} in {size_label(self.cfg.chunk)} PATCHes",
            "download": f"download {size}",
            "curl_download": f"download {size} (curl)",
        }[step]

    def prepare_data(self) -> None:
        """The large file, left in the page cache."""
        secs = write_random_file(self.big.path, self.cfg.size)
        settle()
        print(f"data:     {size_label(self.cfg.size)} random file ({secs:.1f} s to write)")

    def plan(self) -> str:
        return f"{super().plan()}; page-cache prefault {'on' if self.cfg.prefault else 'off'}"

    def new_round(self) -> None:
        self.refs = {}
        self.contents = {}

    def run_steps(self, order: Sequence[Target], round_no: int) -> None:
        self.step_upload(order, "oneshot", round_no)
        self.step_upload(order, "chunked", round_no)
        self.step_download(order)
        self.step_curl_download(order)

    # ---------------------------------------------------------------- steps

    def _round_content(self, mode: str, round_no: int) -> tuple[bytes, str]:
        """A nonce for the big file and the SHA-256 of the file so stamped (cached per round)."""
        if mode not in self.contents:
            nonce = f"{mode}-{round_no}-".encode() + os.urandom(16)
            self.big.stamp(nonce)
            self.contents[mode] = (nonce, source_sha256(self.big))
        return self.contents[mode]

    def step_upload(self, targets: Sequence[Target], mode: str, round_no: int) -> None:
        """One-shot or chunked upload of this round's content to each target."""
        nonce, sha = self._round_content(mode, round_no)
        size = self.cfg.size
        for t in targets:
            if not t.measures(mode):
                continue
            self.big.stamp(nonce)
            self.prefault(size + 256 * MiB)
            with new_client(t.headers) as client:
                warm(client, t)

                def go(t: Target = t, client: httpx.Client = client) -> tuple[float, float]:
                    start = time.perf_counter()
                    if mode == "oneshot":
                        ref = t.upload_oneshot(client, self.big, sha)
                    else:
                        ref = t.upload_chunked(client, self.big, sha, self.cfg.chunk)
                    secs = time.perf_counter() - start
                    self.refs.setdefault(t.key, {})[mode] = ref
                    return size / secs / MB, size

                self.trial(t, mode, go, sample_rss=True)
            settle()

    def _large_ref(self, t: Target) -> tuple[str, str] | None:
        """The large blob ``t`` stored last this round (chunked, else one-shot): mode, ref."""
        refs = self.refs.get(t.key, {})
        mode = "chunked" if "chunked" in refs else "oneshot"
        return (mode, refs[mode]) if mode in refs else None

    def step_download(self, targets: Sequence[Target]) -> None:
        """GET of the blob each target stored last (chunked, else one-shot)."""
        size = self.cfg.size
        for t in targets:
            stored = self._large_ref(t)
            if not t.measures("download") or stored is None:
                continue
            mode, ref = stored
            sha = None if isinstance(t, Sink) else self.contents[mode][1]
            with new_client(t.headers) as client:
                warm(client, t)

                def go(
                    t: Target = t,
                    client: httpx.Client = client,
                    ref: str = ref,
                    sha: str | None = sha,
                ) -> tuple[float, float]:
                    start = time.perf_counter()
                    t.download(client, ref, size, sha)
                    return size / (time.perf_counter() - start) / MB, size

                self.trial(t, "download", go, sample_rss=True)

    def step_curl_download(self, targets: Sequence[Target]) -> None:
        """The same GET with curl into /dev/null: a client whose per-byte cost is small.

        httpx reads about 2 GB/s here whatever the server (the raw sink, the
        registry and ours all reach it), so its download figure measures the
        client; curl reads several times faster and shows the servers apart.
        The httpx step has already checked the digest of what each served.
        """
        if self.curl is None:
            return
        size = self.cfg.size
        for t in targets:
            stored = self._large_ref(t)
            if not t.measures("curl_download") or stored is None:
                continue
            argv = [self.curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
            url = t.blob_url(stored[1])

            def go(argv: list[str] = argv, url: str = url, t: Target = t) -> tuple[float, float]:
                start = time.perf_counter()
                out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=600)
                secs = time.perf_counter() - start
                if out.stdout.strip() != f"200 {size}":
                    raise RuntimeError(f"{t.label}: curl got {out.stdout!r} {out.stderr!r}")
                return size / secs / MB, size

            self.trial(t, "curl_download", go, sample_rss=True)


if __name__ == "__main__":
    main(LargeBench, parse_args)
