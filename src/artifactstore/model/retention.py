"""Retention as values: policies, decisions, a namespace's settings, a run's report.

Pure, with one JSON form each (the HTTP API's and the CLI's ``--json``); the
evaluation that produces decisions is ``controlplane/retention_rules.py`` and
the rows and events are ``controlplane/retention.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from artifactstore.errors import InvalidInput
from artifactstore.model.clock import TIME_FORMAT, utc_iso

__all__ = [
    "DAY",
    "MAX_DAYS",
    "NO_RULE",
    "Decision",
    "PackageKey",
    "RetentionPolicy",
    "RetentionReport",
    "RetentionSettings",
    "VersionRetention",
    "check_days",
    "days_json",
    "days_text",
    "effective_policy",
    "fmt_days",
    "locked_until",
    "younger_than",
]


DAY = 86400.0


#: What a deleted version's explanation says.
NO_RULE = "no rule keeps it"


#: Longest keep-days accepted (100 years): beyond it a number is a typo, not a policy.
MAX_DAYS = 36525.0


_MAX_KEEP_LAST = 1_000_000


_POLICY_KEYS = ("keep_last", "keep_days", "keep_where")


PackageKey = tuple[str, str]  # (namespace, package name)


def fmt_days(days: float) -> str:
    """``30`` rather than ``30.0``: days as people write them."""
    return str(int(days)) if float(days).is_integer() else str(days)


def days_text(days: float) -> str:
    """``1 day``, ``30 days``, ``0.5 days``."""
    return f"{fmt_days(days)} day" + ("" if days == 1 else "s")


def younger_than(committed_at: str, days: float, now: float) -> bool:
    """Whether a version committed at ``committed_at`` is younger than ``days`` at ``now``."""
    return committed_at > utc_iso(now - days * DAY)


def locked_until(committed_at: str, days: float) -> str:
    """When a version committed at ``committed_at`` leaves a lock of ``days``."""
    start = datetime.strptime(committed_at, TIME_FORMAT).replace(tzinfo=UTC)
    return (start + timedelta(days=days)).strftime(TIME_FORMAT)


def check_days(value: object, what: str = "keep_days") -> float:
    """A positive, finite number of days up to MAX_DAYS (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} is a number of days, got {value!r:.40}")
    days = float(value)
    if not math.isfinite(days) or not 0 < days <= MAX_DAYS:
        raise InvalidInput(f"{what} must be more than 0 and at most {days_text(MAX_DAYS)}")
    return days


def days_json(days: float) -> int | float:
    """Whole days as an integer, so event payloads read as they were typed."""
    return int(days) if days.is_integer() else days


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """A validated policy: at least one rule; ``keep_where`` sorted by key."""

    keep_last: int | None = None
    keep_days: float | None = None
    keep_where: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.keep_last is None and self.keep_days is None and not self.keep_where:
            raise InvalidInput(
                "a retention policy needs at least one rule (keep_last, keep_days or "
                "keep_where); a policy that keeps nothing would delete every version"
            )
        if self.keep_last is not None and (
            isinstance(self.keep_last, bool)
            or not isinstance(self.keep_last, int)
            or not 1 <= self.keep_last <= _MAX_KEEP_LAST
        ):
            raise InvalidInput(f"keep_last is a whole number from 1 to {_MAX_KEEP_LAST}")
        if self.keep_days is not None:
            object.__setattr__(self, "keep_days", check_days(self.keep_days))
        for key, value in self.keep_where:
            if not isinstance(key, str) or not 1 <= len(key) <= 256:
                raise InvalidInput("a keep_where key is 1 to 256 characters")
            if not isinstance(value, str) or len(value) > 1024:
                raise InvalidInput(
                    f"keep_where {key[:80]}: the value is a string of at most 1024 characters "
                    '(metadata is matched as text, as ls --where does: "true", "42")'
                )
        pairs = tuple(sorted(self.keep_where, key=lambda kv: kv[0]))
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise InvalidInput("keep_where names a metadata key twice")
        object.__setattr__(self, "keep_where", pairs)

    @classmethod
    def of(
        cls,
        *,
        keep_last: int | None = None,
        keep_days: float | None = None,
        keep_where: Mapping[str, str] | None = None,
    ) -> RetentionPolicy:
        return cls(keep_last, keep_days, tuple((keep_where or {}).items()))

    @classmethod
    def from_json(cls, body: object) -> RetentionPolicy:
        """Parse ``{"keep_last", "keep_days", "keep_where"}`` strictly (unknown keys refused)."""
        if not isinstance(body, dict):
            raise InvalidInput("a retention policy is a JSON object")
        unknown = set(body) - set(_POLICY_KEYS)
        if unknown:
            raise InvalidInput(f"unknown policy field(s): {', '.join(sorted(unknown))[:200]}")
        where = body.get("keep_where") or {}
        if not isinstance(where, dict):
            raise InvalidInput("keep_where is an object of metadata key -> value")
        return cls(body.get("keep_last"), body.get("keep_days"), tuple(where.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "keep_last": self.keep_last,
            "keep_days": None if self.keep_days is None else days_json(self.keep_days),
            "keep_where": dict(self.keep_where) if self.keep_where else None,
        }

    def describe(self) -> str:
        parts = []
        if self.keep_last is not None:
            parts.append(f"keep_last={self.keep_last}")
        if self.keep_days is not None:
            parts.append(f"keep_days={fmt_days(self.keep_days)}")
        if self.keep_where:
            parts.append("keep_where " + ",".join(f"{k}={v}" for k, v in self.keep_where))
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Decision:
    """Keep or delete one version, and every rule that kept it (none: deleted)."""

    version_id: int
    reference: str
    namespace: str
    name: str
    committed_at: str
    keep: bool
    rules: tuple[str, ...]
    held: bool
    locked: bool
    policy_scope: str | None  # "package", "namespace" or None (no policy)

    @property
    def action(self) -> str:
        return "keep" if self.keep else "delete"

    @property
    def reason(self) -> str:
        return "; ".join(self.rules) or NO_RULE

    def to_json(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id,
            "reference": self.reference,
            "namespace": self.namespace,
            "name": self.name,
            "committed_at": self.committed_at,
            "action": self.action,
            "rules": list(self.rules),
            "reason": self.reason,
            "held": self.held,
            "locked": self.locked,
            "policy_scope": self.policy_scope,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Decision:
        return cls(
            version_id=int(body["version_id"]),
            reference=str(body["reference"]),
            namespace=str(body["namespace"]),
            name=str(body["name"]),
            committed_at=str(body["committed_at"]),
            keep=body["action"] == "keep",
            rules=tuple(body["rules"]),
            held=bool(body["held"]),
            locked=bool(body["locked"]),
            policy_scope=body.get("policy_scope"),
        )


def effective_policy(
    policies: Mapping[PackageKey, RetentionPolicy], namespace: str, name: str
) -> tuple[RetentionPolicy | None, str | None]:
    """The package's own policy, else the namespace default, else none; and which it was."""
    own = policies.get((namespace, name))
    if own is not None:
        return own, "package"
    default = policies.get((namespace, ""))
    if default is not None:
        return default, "namespace"
    return None, None


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """A namespace's default policy, its packages' policies and its lock."""

    namespace: str
    default: RetentionPolicy | None
    packages: dict[str, RetentionPolicy]
    lock_days: float | None
    locked_at: str | None

    def effective(self, name: str) -> tuple[RetentionPolicy | None, str | None]:
        policies = {(self.namespace, k): p for k, p in self.packages.items()}
        if self.default is not None:
            policies[(self.namespace, "")] = self.default
        return effective_policy(policies, self.namespace, name)

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "default": None if self.default is None else self.default.to_json(),
            "packages": {k: p.to_json() for k, p in sorted(self.packages.items())},
            "lock": None
            if self.lock_days is None
            else {"keep_days": days_json(self.lock_days), "locked_at": self.locked_at},
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RetentionSettings:
        lock = body.get("lock")
        return cls(
            namespace=str(body["namespace"]),
            default=None
            if body.get("default") is None
            else RetentionPolicy.from_json(body["default"]),
            packages={
                k: RetentionPolicy.from_json(p) for k, p in (body.get("packages") or {}).items()
            },
            lock_days=None if lock is None else float(lock["keep_days"]),
            locked_at=None if lock is None else lock.get("locked_at"),
        )


@dataclass
class RetentionReport:
    """What a run decided (dry run) or did: every live version's decision."""

    dry_run: bool
    evaluated_at: str
    decisions: list[Decision]

    @property
    def deleted(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "evaluated_at": self.evaluated_at,
            "versions": len(self.decisions),
            "kept": len(self.kept),
            "deleted": len(self.deleted),
            "decisions": [d.to_json() for d in self.decisions],
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RetentionReport:
        return cls(
            dry_run=bool(body["dry_run"]),
            evaluated_at=str(body["evaluated_at"]),
            decisions=[Decision.from_json(d) for d in body["decisions"]],
        )


@dataclass(frozen=True, slots=True)
class VersionRetention:
    """One version's retention state, as the version detail shows it."""

    decision: Decision
    policy: RetentionPolicy | None
    lock_days: float | None

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        return {
            "held": d.held,
            "locked": d.locked,
            "locked_until": locked_until(d.committed_at, self.lock_days)
            if self.lock_days is not None
            else None,
            "policy": None if self.policy is None else self.policy.to_json(),
            "policy_scope": d.policy_scope,
            "action": d.action,
            "rules": list(d.rules),
            "reason": d.reason,
        }
