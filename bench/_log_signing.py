"""Signing figures for ``bench/log.py`` (issue 19): what a signature costs.

``measure(scratch)`` prints and returns these rows:

* envelope sign rate: ``sign_package`` (statement, PAE, Ed25519) per second;
* envelope verify rate: ``verify_manifest`` from the manifest's CBOR bytes
  (parse and validate the 10-file manifest, BLAKE3 and SHA-256 of it, binding,
  Ed25519) per second, and ``verify_envelope`` when the digests are known;
* the cost a signature adds to a push: the median wall time of a local
  ``Store.push`` of a small package (3 files) with and without ``sign=``,
  interleaved round by round in one store (SQLite + local files, fsync on),
  and their difference.

Each rate is the best of 3 runs; the push figures are medians over N rounds
(``--rounds``). Absolute numbers drift between runs on these VMs; the ratio
of the two push medians is the figure to compare.

    .venv/bin/python bench/_log_signing.py               # 200 push rounds
    .venv/bin/python bench/_log_signing.py --rounds 50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from artifactstore.model.envelope import Envelope
from artifactstore.model.identity import Digest, Namespace, PackageName, Version
from artifactstore.model.manifest import FileEntry, Manifest
from artifactstore.model.paths import PackagePath
from artifactstore.provenance.dsse import PackageRef, sign_package, verify_envelope, verify_manifest
from artifactstore.provenance.keys import generate
from artifactstore.store import Store

__all__ = ["measure"]


def _manifest() -> Manifest:
    files = [
        FileEntry(
            PackagePath(f"dir/file-{i}.bin"),
            1000 + i,
            "application/octet-stream",
            Digest.parse("blake3:" + f"{i:02x}" * 32),
            Digest.parse("sha256:" + f"{i + 1:02x}" * 32),
        )
        for i in range(10)
    ]
    return Manifest.build(
        Namespace("bench"),
        PackageName("app"),
        Version("1.0.0"),
        files,
        created="2026-12-04T00:00:00Z",
        producer="bench",
    )


def _rate(fn: Any, seconds: float = 0.5) -> float:
    """Calls per second, best of 3 runs of about ``seconds`` each."""
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(50):
                fn()
            n += 50
        best = max(best, n / elapsed)
    return best


def measure(scratch: Path, rounds: int = 200) -> list[dict[str, Any]]:
    """Sign and verify rates, and the cost of ``sign=`` on a local push; printed and returned."""
    key = generate()
    manifest = _manifest()
    package, cbor = PackageRef.of(manifest), manifest.to_cbor()
    envelope = sign_package(package, key)
    text = envelope.canonical()
    signs = _rate(lambda: sign_package(package, key))
    verifies = _rate(lambda: verify_manifest(Envelope.parse(text), cbor, [key.public]))
    checks = _rate(lambda: verify_envelope(Envelope.parse(text), package, [key.public]))
    home = Path(tempfile.mkdtemp(prefix="signing-", dir=scratch))
    tree = home / "tree"
    tree.mkdir()
    for i in range(3):
        (tree / f"f{i}.txt").write_bytes(f"small file {i}\n".encode() * 20)
    plain: list[float] = []
    signed: list[float] = []
    with Store.open(home / "store") as store:
        store.push("bench/warm:0", [tree], sign=key)  # opens the database, warms caches
        for i in range(rounds):
            for times, sign in (
                ((plain, None), (signed, key))
                if i % 2
                else (
                    (signed, key),
                    (plain, None),
                )
            ):
                ref = f"bench/{'signed' if sign else 'plain'}:{i}"
                start = time.perf_counter()
                store.push(ref, [tree], sign=sign)
                times.append(time.perf_counter() - start)
    plain_ms, signed_ms = statistics.median(plain) * 1e3, statistics.median(signed) * 1e3
    rows = [
        {"figure": "envelope sign rate", "value": round(signs), "unit": "/s"},
        {
            "figure": "envelope verify rate (from manifest bytes)",
            "value": round(verifies),
            "unit": "/s",
        },
        {"figure": "envelope verify rate (digests known)", "value": round(checks), "unit": "/s"},
        {"figure": "local push, unsigned (median)", "value": round(plain_ms, 3), "unit": "ms"},
        {"figure": "local push, signed (median)", "value": round(signed_ms, 3), "unit": "ms"},
        {
            "figure": "cost of a signature per push",
            "value": round(signed_ms - plain_ms, 3),
            "unit": f"ms ({signed_ms / plain_ms:.3f}x, {rounds} rounds)",
        },
    ]
    for row in rows:
        print(f"{row['figure']:<45} {row['value']:>12} {row['unit']}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="push rounds of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-signing-") as tmp:
        measure(Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
