"""Time: the one clock type, the time format of events and manifests, and the grace window.

Everything that decides by time takes a :data:`Clock` (``time.time`` in
production) so that tests move time forward instead of sleeping through a
grace period.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["TIME_FORMAT", "Clock", "held_since", "utc_iso", "utc_now"]

#: Seconds since the epoch, as ``time.time`` returns them.
Clock = Callable[[], float]

#: ``strftime``/``strptime`` format of every event and manifest time: RFC 3339 UTC with
#: microseconds, fixed width, so times compare correctly as strings (the views keep text).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_iso(timestamp: float) -> str:
    """A POSIX timestamp in the event time format (RFC 3339 UTC, comparable as strings)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime(TIME_FORMAT)


def utc_now() -> str:
    """The current time in the event time format."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def held_since(now: float, grace: float) -> str:
    """Uploads into a namespace since then still count as its holdings (docs/retention.md)."""
    return utc_iso(now - grace)
