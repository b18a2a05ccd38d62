"""Options, records and table rows the HTTP benchmarks share (see ``_http_bench.py``).

The options every ``bench/http_*.py`` script takes (our servers, the peer,
scratch space, JSON output), the series of trials with the server's CPU time,
and the rows of the all-trials table and of the judged figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import MB, GiB, KiB, MiB, Series, add_scratch_and_json, fmt_num, verdict

OUR_SERVERS = ("uvicorn", "granian")
SMALL_SIZE = 4 * KiB
TARGET_RATIO = 1.0


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class HttpConfig:
    """The options every HTTP benchmark takes; each script's config adds its own."""

    trials: int
    servers: tuple[str, ...]
    workers: int
    peer: bool
    scratch: Path | None
    json_path: Path | None
    prefault: bool
    auth: bool
    """Whether our server checks a token on every request (the registry checks none)."""

    def to_json(self) -> dict[str, Any]:
        """The settings that shape the figures, for ``--json``."""
        return {
            "trials": self.trials,
            "servers": list(self.servers),
            "workers": self.workers,
            "auth": self.auth,
            "prefault": self.prefault,
        }


def http_parser(
    description: str, quick: str, rounds: bool = True, prefault: bool = True
) -> argparse.ArgumentParser:
    """The common options: ``--quick`` (help text ``quick``), servers, peer, scratch, JSON.

    ``rounds`` adds ``--trials``; ``prefault`` adds ``--no-prefault`` (for the
    scripts that upload large blobs).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help=quick)
    if rounds:
        p.add_argument("--trials", type=int, default=3, help="rounds; best of N is reported")
    else:
        p.set_defaults(trials=1)
    p.add_argument(
        "--servers",
        default=",".join(OUR_SERVERS),
        help="our ASGI servers to measure, comma list of uvicorn,granian (default both)",
    )
    p.add_argument("--workers", type=int, default=1, help="our server's --workers (1)")
    p.add_argument(
        "--no-auth",
        dest="auth",
        action="store_false",
        help="our server without authentication (serve --no-auth; the figures before "
        "2026-12-04); by default every request carries a token, as a user's would",
    )
    p.add_argument("--no-peer", dest="peer", action="store_false", help="skip the registry")
    add_scratch_and_json(p)
    if prefault:
        p.add_argument(
            "--no-prefault",
            dest="prefault",
            action="store_false",
            help="do not write-and-delete a page-cache file before each upload "
            "(see prefault_page_cache in bench/_common.py)",
        )
    else:
        p.set_defaults(prefault=False)
    return p


def parse_options(
    p: argparse.ArgumentParser, argv: list[str] | None, counts: Mapping[str, tuple[int, int]]
) -> argparse.Namespace:
    """Parse ``argv``; each option in ``counts`` (dest -> full and quick default) must be > 0.

    Such an option, left out, takes its ``--quick`` default with ``--quick``
    and its full one without.
    """
    a = p.parse_args(argv)
    for dest, (full, quick) in counts.items():
        if getattr(a, dest) is None:
            setattr(a, dest, quick if a.quick else full)
        if getattr(a, dest) <= 0:
            p.error(f"--{dest.replace('_', '-')} must be positive")
    return a


def common_options(p: argparse.ArgumentParser, a: argparse.Namespace) -> dict[str, Any]:
    """The parsed common options, checked, as ``HttpConfig`` fields."""
    servers = tuple(dict.fromkeys(filter(None, (w.strip() for w in a.servers.split(",")))))
    for s in servers:
        if s not in OUR_SERVERS:
            p.error(f"--servers: unknown server {s!r} (uvicorn, granian)")
    if a.trials <= 0 or a.workers <= 0:
        p.error("--trials and --workers must be positive")
    return {
        "trials": a.trials,
        "servers": servers,
        "workers": a.workers,
        "peer": a.peer,
        "scratch": a.scratch,
        "json_path": a.json_path,
        "prefault": a.prefault,
        "auth": a.auth,
    }


def size_label(n: int) -> str:
    """1 GiB, 256 MiB, 4 KiB."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit:,} {name}"
    return f"{n:,} B"


def small_blobs(count: int) -> list[tuple[bytes, str]]:
    """``count`` random 4 KiB blobs in memory with their SHA-256 (hex); says so."""
    blobs = []
    for _ in range(count):
        data = os.urandom(SMALL_SIZE)
        blobs.append((data, hashlib.sha256(data).hexdigest()))
    print(f"data:     {count:,} random blobs of 4 KiB in memory")
    return blobs


def version_of(argv: list[str]) -> str:
    """First line a tool prints about its version ('?' if it cannot say)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0] if lines else "?"


# --------------------------------------------------------------------------- series


@dataclass
class HttpSeries(Series):
    """A Series plus what the server spent: CPU seconds and work units per trial."""

    server_cpu_s: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)
    """Bytes (rates in MB/s) or requests/blobs (rates per second) of each trial."""
    seconds: list[float] = field(default_factory=list)

    def cpu_per_unit(self) -> float | None:
        """Server CPU per GiB (byte rates) or per request, in µs; over all trials."""
        if not self.server_cpu_s or not sum(self.work):
            return None
        per = sum(self.server_cpu_s) / sum(self.work)
        return per * GiB if self.unit == "MB/s" else per * 1e6

    def cpu_unit(self) -> str:
        return "CPU s/GiB" if self.unit == "MB/s" else "CPU us/req"

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["server_cpu_s"] = self.server_cpu_s
        out["work"] = self.work
        out["seconds"] = self.seconds
        out["server_cpu_per_unit"] = self.cpu_per_unit()
        out["server_cpu_unit"] = self.cpu_unit()
        return out


TRIALS_HEADER = (
    "target: measurement",
    "best",
    "trials",
    "server CPU",
    "per",
    "peak RSS MB",
    "others CPU %",
)


def trial_row(s: HttpSeries) -> list[str]:
    """One series in the all-trials table."""
    cpu = s.cpu_per_unit()
    return [
        s.name,
        f"{fmt_num(s.best)} {s.unit}" if s.values else _short(s.error or "-"),
        " ".join(fmt_num(v) for v in s.values),
        "-" if cpu is None else f"{cpu:,.{2 if s.unit == 'MB/s' else 0}f}",
        s.cpu_unit(),
        "-" if s.max_rss_bytes is None else fmt_num(s.max_rss_bytes / MB),
        " ".join(f"{x:.0f}" for x in s.others_cpu_pct),
    ]


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def target_row(
    name: str, server: str, step: str, value: float | None, target: float, higher_is_better: bool
) -> dict[str, Any]:
    """One judged figure for the report and the JSON."""
    return {
        "name": name,
        "server": server,
        "step": step,
        "value": value,
        "target": target,
        "higher_is_better": higher_is_better,
        "status": verdict(value, target, higher_is_better, missing="n/a"),
    }
