"""Servers under test as processes: start and stop them, and measure their process trees.

The HTTP benchmarks run each server (ours, the CNCF registry, a raw sink) as a
child in its own session and read what its whole process tree (a server and
its workers) costs from /proc: CPU seconds, RSS sampled while a step runs,
the kernel's high-water marks and PSS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench._common import KiB


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it; the race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return None
    # The command may hold spaces and parentheses: the fields follow the last ')'.
    return stat.rpartition(")")[2].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants, from a scan of /proc (empty once it is gone).

    A server's workers (granian, uvicorn --workers N) are its children; their
    memory and CPU belong to the server's figures.
    """
    children: dict[int, list[int]] = {}
    found = False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        child = int(entry.name)
        fields = _proc_stat_fields(child)
        if fields is None or len(fields) < 2:
            continue
        found = found or child == pid
        children.setdefault(int(fields[1]), []).append(child)
    if not found:
        return []
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status_bytes(pid: int, key: str) -> int:
    """One ``kB`` field of /proc/PID/status (VmRSS, VmHWM) in bytes; 0 if unknown."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * KiB
    return 0


def tree_rss_bytes(pids: Sequence[int]) -> int:
    """Summed VmRSS of the given processes right now."""
    return sum(_status_bytes(p, "VmRSS") for p in pids)


def tree_hwm_bytes(pids: Sequence[int]) -> int:
    """Summed VmHWM (each process's own RSS high-water mark) of the given processes."""
    return sum(_status_bytes(p, "VmHWM") for p in pids)


def reset_hwm(pids: Sequence[int]) -> None:
    """Restart the VmHWM high-water marks (``echo 5 > /proc/PID/clear_refs``); best effort."""
    for p in pids:
        with contextlib.suppress(OSError), open(f"/proc/{p}/clear_refs", "w") as f:
            f.write("5")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its live descendants."""
    ticks = 0
    for p in process_tree(pid):
        fields = _proc_stat_fields(p)
        if fields is not None and len(fields) > 12:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class PeakRssSampler:
    """Polls the summed VmRSS of a process tree every ``interval`` s; keeps the maximum.

    Use as a context manager around the step measured. The tree is re-read
    every ``refresh`` s so workers started meanwhile are counted; sampling runs
    in a thread that sleeps between polls, so it costs the measured step little.
    """

    def __init__(self, pid: int, interval: float = 0.05, refresh: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.refresh = refresh
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        pids = process_tree(self.pid)
        listed = time.monotonic()
        while True:
            if time.monotonic() - listed >= self.refresh:
                pids = process_tree(self.pid)
                listed = time.monotonic()
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(pids))
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_service(
    argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a long-running child (a server) in its own session, its output in ``log``.

    Its own session keeps a terminal's Ctrl-C away from it, so the caller
    decides when it stops (``stop_service``), after the scratch data it uses.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_service(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGTERM the service's process group (it and its workers), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Workers that outlived their parent are still in its process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def tree_pss_bytes(pids: Sequence[int]) -> int:
    """Summed PSS (shared pages split between their users) of the given processes.

    Forked workers share their parent's pages copy-on-write, which a sum of
    VmRSS counts once per process; PSS counts them once in all.
    """
    total = 0
    for p in pids:
        with (
            contextlib.suppress(OSError),
            open(f"/proc/{p}/smaps_rollup", encoding="utf-8") as f,
        ):
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * KiB
                    break
    return total
