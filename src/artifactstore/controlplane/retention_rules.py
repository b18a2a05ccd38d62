"""Retention rules as pure values: policies, the facts about a version, decisions.

No database and no clock here: :func:`evaluate` is a function of the
versions' facts, the policies, the namespaces' locks and movable tags and
``now``, so the
property tests can check it against an independent oracle over generated
histories, and ``retention.plan`` is only the code that loads the facts.
See ``retention.py`` for what the rules mean.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from artifactstore.controlplane.protection import days_text, fmt_days, younger_than
from artifactstore.errors import InvalidInput

__all__ = [
    "MAX_DAYS",
    "NO_RULE",
    "Decision",
    "PackageKey",
    "RetentionPolicy",
    "VersionFacts",
    "check_days",
    "days_json",
    "decide",
    "effective_policy",
    "evaluate",
]

#: What a deleted version's explanation says.
NO_RULE = "no rule keeps it"
#: Longest keep-days accepted (100 years): beyond it a number is a typo, not a policy.
MAX_DAYS = 36525.0
_MAX_KEEP_LAST = 1_000_000
_POLICY_KEYS = ("keep_last", "keep_days", "keep_where")

PackageKey = tuple[str, str]  # (namespace, package name)


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
class VersionFacts:
    """What evaluation needs to know about one live version."""

    id: int
    namespace: str
    name: str
    version: str
    committed_at: str
    meta: Mapping[str, str] = field(default_factory=dict)
    holds: tuple[int, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.namespace}/{self.name}:{self.version}"


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


# --- pure evaluation ------------------------------------------------------------------------


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


def decide(
    v: VersionFacts,
    rank: int,
    policy: RetentionPolicy | None,
    scope: str | None,
    lock: float | None,
    now: float,
    *,
    tags: Collection[str],
) -> Decision:
    """The decision for one version that is the ``rank``-th newest (1 = newest) of its package.

    ``tags`` are the movable tags of the version's namespace: a version named
    by one is always kept (SPEC section 9), as a held or locked one is.
    """
    rules: list[str] = []
    if v.holds:
        rules.append("legal hold " + ", ".join(f"#{h}" for h in v.holds))
    locked = lock is not None and younger_than(v.committed_at, lock, now)
    if locked:
        assert lock is not None
        rules.append(f"retention lock ({days_text(lock)})")
    if v.version in tags:
        rules.append(f"movable tag '{v.version}'")
    if policy is None:
        rules.append("no retention policy")
    else:
        if policy.keep_last is not None and rank <= policy.keep_last:
            rules.append(f"keep_last={policy.keep_last} (newest #{rank})")
        if policy.keep_days is not None and younger_than(v.committed_at, policy.keep_days, now):
            rules.append(f"keep_days={fmt_days(policy.keep_days)}")
        if policy.keep_where and all(v.meta.get(k) == val for k, val in policy.keep_where):
            rules.append("keep_where " + ",".join(f"{k}={val}" for k, val in policy.keep_where))
    return Decision(
        version_id=v.id,
        reference=v.reference,
        namespace=v.namespace,
        name=v.name,
        committed_at=v.committed_at,
        keep=bool(rules),
        rules=tuple(rules),
        held=bool(v.holds),
        locked=locked,
        policy_scope=scope,
    )


def evaluate(
    versions: Sequence[VersionFacts],
    policies: Mapping[PackageKey, RetentionPolicy],
    locks: Mapping[str, float],
    now: float,
    *,
    tags: Mapping[str, Collection[str]],
) -> list[Decision]:
    """Decide every version; grouped by package, newest first within each.

    ``locks`` and ``tags`` are by namespace: its retention lock (days) and its
    movable tags (version names such as ``latest``).
    """
    by_package: dict[PackageKey, list[VersionFacts]] = {}
    for v in versions:
        by_package.setdefault((v.namespace, v.name), []).append(v)
    out: list[Decision] = []
    for key in sorted(by_package):
        policy, scope = effective_policy(policies, *key)
        lock = locks.get(key[0])
        movable = tags.get(key[0], ())
        newest_first = sorted(by_package[key], key=lambda v: v.id, reverse=True)
        out.extend(
            decide(v, rank, policy, scope, lock, now, tags=movable)
            for rank, v in enumerate(newest_first, 1)
        )
    return out
