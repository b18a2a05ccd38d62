"""Prometheus text exposition, kept in-process (one registry per app, no globals).

Counters and the latency histogram live here; gauges are read from the store
at scrape time and handed to :meth:`Metrics.render` as :class:`Gauge` values,
unlabelled or one sample per label set.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Gauge", "Labels", "Metrics"]

#: A sample's labels as sorted (name, value) pairs; () for an unlabelled gauge.
Labels = tuple[tuple[str, str], ...]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value: whole numbers exactly (``:g`` would round a byte count to 6 digits)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True, slots=True)
class Gauge:
    """One gauge family: its help text and its samples by label set."""

    help: str
    samples: Mapping[Labels, float] = field(default_factory=dict)

    @classmethod
    def of(cls, help_text: str, value: float) -> Gauge:
        """An unlabelled gauge."""
        return cls(help_text, {(): value})

    @classmethod
    def by(cls, help_text: str, label: str, values: Mapping[str, float]) -> Gauge:
        """One sample per value of one label (``namespace="ci"``)."""
        return cls(help_text, {((label, k),): v for k, v in values.items()})

    def lines(self, name: str) -> list[str]:
        out = [f"# HELP {name} {self.help}", f"# TYPE {name} gauge"]
        for labels, value in sorted(self.samples.items()):
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            out.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
        return out


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], list[float]] = {}
        self._bytes_in = 0
        self._bytes_out = 0

    def observe(
        self, method: str, route: str, status: int, seconds: float, received: int, sent: int
    ) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            hist = self._latency.setdefault((method, route), [0.0] * (len(_BUCKETS) + 2))
            for i, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    hist[i] += 1
            hist[-2] += 1  # count (+Inf)
            hist[-1] += seconds  # sum
            self._bytes_in += received
            self._bytes_out += sent

    def render(self, gauges: Mapping[str, Gauge], *, requests: bool = True) -> str:
        """The exposition text: the request counters (store-wide figures, shown only
        with ``requests``) and then ``gauges``."""
        lines = []
        if requests:
            lines += self._request_lines()
        for name, gauge in sorted(gauges.items()):
            lines += gauge.lines(name)
        return "\n".join(lines) + "\n"

    def _request_lines(self) -> list[str]:
        lines = [
            "# HELP artifactstore_http_requests_total HTTP requests by method, route and status.",
            "# TYPE artifactstore_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(
                    f'artifactstore_http_requests_total{{method="{method}",'
                    f'route="{_escape(route)}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP artifactstore_http_request_duration_seconds Request latency.",
                "# TYPE artifactstore_http_request_duration_seconds histogram",
            ]
            for (method, route), hist in sorted(self._latency.items()):
                labels = f'method="{method}",route="{_escape(route)}"'
                for bound, count in zip(_BUCKETS, hist, strict=False):
                    lines.append(
                        f'artifactstore_http_request_duration_seconds_bucket{{{labels},le="{bound}"}}'
                        f" {count:.0f}"
                    )
                lines.append(
                    f'artifactstore_http_request_duration_seconds_bucket{{{labels},le="+Inf"}}'
                    f" {hist[-2]:.0f}"
                )
                lines.append(
                    f"artifactstore_http_request_duration_seconds_count{{{labels}}} {hist[-2]:.0f}"
                )
                lines.append(
                    f"artifactstore_http_request_duration_seconds_sum{{{labels}}} {hist[-1]:.6f}"
                )
            lines += [
                "# HELP artifactstore_http_received_bytes_total Request body bytes received.",
                "# TYPE artifactstore_http_received_bytes_total counter",
                f"artifactstore_http_received_bytes_total {self._bytes_in}",
                "# HELP artifactstore_http_sent_bytes_total Response body bytes sent.",
                "# TYPE artifactstore_http_sent_bytes_total counter",
                f"artifactstore_http_sent_bytes_total {self._bytes_out}",
            ]
        return lines
