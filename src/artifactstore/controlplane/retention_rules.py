"""The pure evaluation of retention: the facts about a version in, decisions out.

The policies and decisions themselves are values of ``model/retention.py``.

No database and no clock here: :func:`evaluate` is a function of the
versions' facts, the policies, the namespaces' locks and movable tags and
``now``, so the
property tests can check it against an independent oracle over generated
histories, and ``retention.plan`` is only the code that loads the facts.
See ``retention.py`` for what the rules mean.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from artifactstore.model.retention import (
    Decision,
    PackageKey,
    RetentionPolicy,
    days_text,
    effective_policy,
    fmt_days,
    younger_than,
)

__all__ = [
    "VersionFacts",
    "decide",
    "evaluate",
]


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


# --- pure evaluation ------------------------------------------------------------------------


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
    by one is always kept (docs/retention.md), as a held or locked one is.
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
