"""Probe: how fast can one Python pass hash a large file and write it durably?

Not a benchmark of our code: the ceiling our large-file ingest is measured
against, for two ways of writing. Each trial reads a file from the page cache
in 4 MiB pieces, hashes every piece with SHA-256 and BLAKE3 on two pool
threads (as ``dataplane/digests.py`` does), writes it to a new file meanwhile,
and ends with one ``fdatasync``:

* ``buffered``: plain writes, writeback started every 16 MiB with
  ``sync_file_range`` (the local backend's own loader and interval: what it did for a whole
  object before ``9e5b465``, and still does for its first 16 MiB);
* ``O_DIRECT``: the pieces go from page-aligned buffers straight to the disk,
  with no page-cache copy and no writeback work for the kernel (what the
  local backend now does past an object's first 16 MiB).

The two alternate, with a page-cache prefault before each (see
``prefault_page_cache``). Run: ``.venv/bin/python bench/write_modes.py``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import itertools
import mmap
import os
import statistics
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import blake3

# As in ingest.py: the helpers resolve by the same name for python and mypy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import MB, MiB, prefault_page_cache

from artifactstore.dataplane.backends.local import (
    _SYNC_FILE_RANGE_WRITE,
    _WRITEBACK_EVERY,
    _load_sync_file_range,
)

PIECE = 4 * MiB


def one_pass(source: Path, target: Path, direct: bool) -> float:
    """MB/s of reading, hashing and durably writing ``source`` to ``target``."""
    start_writeback = _load_sync_file_range()
    assert start_writeback is not None, "needs Linux sync_file_range"
    buffers = [mmap.mmap(-1, PIECE), mmap.mmap(-1, PIECE)]  # page-aligned, as O_DIRECT needs
    sha, b3 = hashlib.sha256(), blake3.blake3()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
    src = os.open(source, os.O_RDONLY)
    dst = os.open(target, flags, 0o600)
    pending: list[Future[object]] = []
    written = 0
    try:
        with ThreadPoolExecutor(2) as pool:
            start = time.perf_counter()
            for i in itertools.count():
                buf = buffers[i % 2]
                n = os.readv(src, [buf])
                for f in pending:
                    f.result()
                if not n:
                    break
                piece = memoryview(buf)[:n]
                pending = [pool.submit(sha.update, piece), pool.submit(b3.update, piece)]
                if direct and n % 4096:  # the unaligned tail goes through the page cache
                    fcntl.fcntl(dst, fcntl.F_SETFL, fcntl.fcntl(dst, fcntl.F_GETFL) & ~os.O_DIRECT)
                os.write(dst, piece)
                written += n
                if not direct and written % _WRITEBACK_EVERY == 0:
                    start_writeback(
                        dst, written - _WRITEBACK_EVERY, _WRITEBACK_EVERY, _SYNC_FILE_RANGE_WRITE
                    )
            os.fdatasync(dst)
            elapsed = time.perf_counter() - start
    finally:
        os.close(src)
        os.close(dst)
        target.unlink()
    return float(written / elapsed / MB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--scratch", type=Path, default=Path.cwd())
    args = parser.parse_args()
    source = args.scratch / "write-modes.src"
    with open(source, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MiB))
    results: dict[str, list[float]] = {"buffered": [], "O_DIRECT": []}
    try:
        with open(source, "rb") as f:  # into the page cache
            while f.read(PIECE):
                pass
        for _ in range(args.trials):
            for mode in results:
                prefault_page_cache(args.scratch, source.stat().st_size + 64 * MiB)
                mbs = one_pass(source, args.scratch / "write-modes.dst", mode == "O_DIRECT")
                results[mode].append(mbs)
                print(f"  {mode:9} {mbs:7,.0f} MB/s", flush=True)
    finally:
        source.unlink()
    for mode, figures in results.items():
        print(
            f"{mode:9} best {max(figures):7,.0f}  median {statistics.median(figures):7,.0f}"
            f"  worst {min(figures):7,.0f} MB/s"
        )


if __name__ == "__main__":
    main()
