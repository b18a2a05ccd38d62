"""The time format of events and manifests: RFC 3339 UTC with microseconds.

Fixed width (``2026-01-31T12:00:00.000000Z``), so times compare correctly as
strings: the views keep them as text and queries compare the text.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["TIME_FORMAT", "utc_iso", "utc_now"]

#: ``strftime``/``strptime`` format of every event and manifest time.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> str:
    """The current time in the event time format (reads the clock: the one impure name here)."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def utc_iso(timestamp: float) -> str:
    """A POSIX timestamp in the event time format (comparable as strings)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime(TIME_FORMAT)
