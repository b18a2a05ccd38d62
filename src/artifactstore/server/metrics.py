"""Prometheus text exposition, kept in-process (one registry per app, no globals)."""

from __future__ import annotations

import threading
from collections import defaultdict

__all__ = ["Metrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
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
        for name, (help_text, value) in sorted(gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"
