"""Periodic jobs in ``serve`` (background GC, the upload sweep, restores, the event
stream out to NATS, the log's checkpoints), one replica at a time.

Every replica (every worker process of every host) schedules the same jobs;
before each run it takes the job's lease (``controlplane/leases.py``, named
after the job), so only the holder runs it. The holder keeps its lease
between runs and renews it from a heartbeat thread, also while a run is in
progress, so a run may last longer than the TTL; a replica that dies stops
renewing and another one takes over within :data:`LEASE_TTL`. Stopping
releases the leases, so a clean shutdown hands over at once.

Jobs are blocking I/O (GC walks the database and the storage): each runs in
its own daemon thread, never on the event loop, and a slow job does not
delay another. A failed run is logged and retried at the next interval; no
job's exception reaches the server. Each run writes one JSON line to the
server's log: the job, the outcome, its duration and the figures the job
returned; a ``quiet`` job's runs that did nothing (no figures) write none, so
that a job polling several times a second (the event stream) does not flood
the log. A job with a ``close`` has it called once its thread has ended.

A new job is one more :class:`PeriodicJob` in :func:`scheduled_jobs`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from artifactstore.store import Store

__all__ = [
    "GC_ACTOR",
    "LEASE_TTL",
    "STOP_TIMEOUT",
    "STREAM_INTERVAL",
    "STREAM_LEASE_TTL",
    "Background",
    "PeriodicJob",
    "holder_id",
    "scheduled_jobs",
]

#: Seconds a lease lasts without renewal: how long a crashed holder blocks the others.
LEASE_TTL = 60.0

#: Seconds ``stop`` waits for running jobs; a run still going then keeps its lease
#: until it expires, so no other replica starts the job while this one may still run it.
STOP_TIMEOUT = 5.0

#: The actor background GC records in ``blob.collected`` events.
GC_ACTOR = "system:gc"

#: Seconds between rounds of the event stream's publisher: how soon after a commit
#: its events reach NATS (a round with nothing new is two indexed reads).
STREAM_INTERVAL = 0.25
#: The publisher's own lease TTL: after its holder crashes the stream stalls this
#: long, not a minute. Renewed every round; two publishers overlapping (a holder
#: stalled past it) is safe, only wasted work (services/stream.py).
STREAM_LEASE_TTL = 3.0


@dataclass(frozen=True)
class PeriodicJob:
    """A job run every ``interval`` seconds by whichever replica holds lease ``name``.

    ``run`` returns the figures of the run (JSON values) for the log line;
    ``quiet``: runs that return no figures are not logged; ``close`` frees what
    the job holds (a connection) when the server stops; ``lease_ttl``: the
    job's own TTL (None: the Background's).
    """

    name: str
    interval: float
    run: Callable[[], Mapping[str, Any]]
    quiet: bool = False
    close: Callable[[], None] | None = None
    lease_ttl: float | None = None


def scheduled_jobs(store: Store, logger: logging.Logger | None = None) -> list[PeriodicJob]:
    """The jobs ``serve`` runs with these settings (none when all are switched off);
    ``logger`` gets the event stream's own lines (connected, NATS unavailable)."""
    jobs: list[PeriodicJob] = []
    if store.settings.nats_servers():
        # The event stream out (docs/events.md): services/stream.py, one publisher
        # across replicas; it connects on its first round, never at start-up.
        publisher = store.event_publisher(logger or logging.getLogger("artifactstore.access"))
        jobs.append(
            PeriodicJob(
                "events-stream",
                STREAM_INTERVAL,
                publisher.run,
                quiet=True,
                close=publisher.close,
                lease_ttl=STREAM_LEASE_TTL,
            )
        )
    if store.settings.upload_sweep_interval > 0:
        # Expired sessions' bytes and crash leftovers go whether or not GC is scheduled.
        sweep = store.settings.upload_sweep_interval
        jobs.append(PeriodicJob("uploads", sweep, lambda: {"removed": store.expire_uploads()}))
    if store.settings.gc_interval > 0:
        jobs.append(PeriodicJob("gc", store.settings.gc_interval, lambda: _collect(store)))
    if store.settings.log_checkpoint_interval > 0:
        # A signed checkpoint of the log, written outside the database
        # (LOG_CHECKPOINT_URL), so that a later cut or rewrite of the log shows.
        interval = store.settings.log_checkpoint_interval
        jobs.append(PeriodicJob("log-checkpoint", interval, store.log_publish))
    delay = store.settings.restore_delay
    if delay > 0:
        # Restores that are due complete here, so that a HEAD or a tier status sees
        # them hot; a read completes a due restore itself, so this only keeps pace.
        interval = max(0.5, min(30.0, delay / 2))
        jobs.append(PeriodicJob("restores", interval, lambda: _restore(store)))
    return jobs


def _restore(store: Store) -> dict[str, Any]:
    report = store.complete_restores()
    return {"completed": len(report.changed), "bytes": report.bytes_changed}


def _collect(store: Store) -> dict[str, Any]:
    report = store.gc(actor=GC_ACTOR)
    return {
        "collected": len(report.collected),
        "bytes_freed": report.bytes_freed,
        "orphans_removed": report.orphans_removed,
        "protected_by_grace": report.protected_by_grace,
    }


def holder_id() -> str:
    """Unique per Background: two workers of one host, or one restarted, never share it."""
    return f"{socket.gethostname()[:96]}:{os.getpid()}:{secrets.token_hex(4)}"


class Background:
    """Runs ``jobs`` in daemon threads between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        store: Store,
        jobs: Sequence[PeriodicJob],
        logger: logging.Logger,
        *,
        lease_ttl: float = LEASE_TTL,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"two periodic jobs share a name (a lease): {names}")
        self._ttls = {job.name: job.lease_ttl or lease_ttl for job in jobs}
        if lease_ttl <= 0 or any(job.interval <= 0 or self._ttls[job.name] <= 0 for job in jobs):
            raise ValueError("periodic jobs need positive intervals and a positive lease TTL")
        self.store = store
        self.jobs = tuple(jobs)
        self.logger = logger
        self.stop_timeout = stop_timeout
        self.holder = holder_id()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards _held
        self._held: set[str] = set()
        self._workers: list[tuple[PeriodicJob, threading.Thread]] = []
        self._heartbeat: threading.Thread | None = None

    def start(self) -> None:
        """Start one thread per job and the lease heartbeat; nothing without jobs."""
        if self._workers or self._stopping.is_set():
            raise RuntimeError("a Background starts once")
        if not self.jobs:
            return
        for job in self.jobs:
            thread = threading.Thread(
                target=self._loop, args=(job,), name=f"artifactstore-{job.name}", daemon=True
            )
            self._workers.append((job, thread))
        self._heartbeat = threading.Thread(
            target=self._renew, name="artifactstore-leases", daemon=True
        )
        for _job, thread in self._workers:
            thread.start()
        self._heartbeat.start()

    def stop(self) -> None:
        """Stop the threads (waiting at most ``stop_timeout``) and release the leases.

        Blocking: call it from a worker thread, not the event loop.
        """
        self._stopping.set()
        deadline = time.monotonic() + self.stop_timeout
        threads = [thread for _job, thread in self._workers]
        if self._heartbeat is not None:
            threads.append(self._heartbeat)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._heartbeat is not None and self._heartbeat.is_alive():
            # It may still renew, undoing a release: leave the leases to expire.
            with self._lock:
                unreleased = sorted(self._held)
            for name in unreleased:
                self._log(name, "not_released", logging.WARNING)
            return
        for job, thread in self._workers:
            if thread.is_alive():
                self._log(job.name, "still_running", logging.WARNING)
                continue
            if job.close is not None:
                try:
                    job.close()
                except Exception as exc:  # stopping goes on: the process is ending
                    self._log(job.name, "close_failed", logging.WARNING, _failure(exc))
            with self._lock:
                held = job.name in self._held
                self._held.discard(job.name)
            if held:
                try:
                    self.store.release_lease(job.name, self.holder)
                except Exception as exc:  # the lease expires by itself
                    self._log(job.name, "release_failed", logging.WARNING, _failure(exc))

    def holds(self, name: str) -> bool:
        """Whether this Background believes it holds lease ``name``."""
        with self._lock:
            return name in self._held

    # --- threads ----------------------------------------------------------------------

    def _loop(self, job: PeriodicJob) -> None:
        while not self._stopping.wait(job.interval):
            self._run_once(job)

    def _run_once(self, job: PeriodicJob) -> None:
        started = time.monotonic()
        try:
            if not self._claim(job.name):
                return
            figures = job.run()
        except Exception as exc:
            failure = {"duration_ms": _since(started), **_failure(exc)}
            self._log(job.name, "error", logging.ERROR, failure)
            return
        if figures or not job.quiet:
            self._log(job.name, "ok", logging.INFO, {"duration_ms": _since(started), **figures})

    def _claim(self, name: str) -> bool:
        """Take or renew lease ``name``; logs when this replica gains or loses it."""
        won = self.store.acquire_lease(name, self.holder, self._ttls[name])
        with self._lock:
            had = name in self._held
            if won:
                self._held.add(name)
            else:
                self._held.discard(name)
        if won != had:
            self._log(name, "lease_acquired" if won else "lease_lost", logging.INFO)
        return won

    def _renew(self) -> None:
        """Renew the held leases every third of the shortest TTL, also while their jobs run."""
        while not self._stopping.wait(min(self._ttls.values()) / 3):
            with self._lock:
                held = sorted(self._held)
            for name in held:
                try:
                    self._claim(name)
                except Exception as exc:  # retried at the next beat, well before expiry
                    self._log(name, "renew_failed", logging.WARNING, _failure(exc))

    def _log(
        self, job: str, status: str, level: int, fields: Mapping[str, Any] | None = None
    ) -> None:
        """One JSON line, like the access log's; a job's figures never replace these keys."""
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event": "background_job",
            "job": job,
            "status": status,
            "holder": self.holder,
        }
        line.update((k, v) for k, v in (fields or {}).items() if k not in line)
        self.logger.log(level, json.dumps(line, default=str))


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)


def _failure(exc: Exception) -> dict[str, str]:
    return {
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)),
    }
