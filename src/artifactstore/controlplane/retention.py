"""Retention policies, the retention lock, and plans that explain every decision.

**Policies** belong to a namespace (its default, stored with package ``""``)
or to one package; a package's own policy *replaces* the namespace default
(rules are never merged, so the policy you read for a package is the one that
applies). A policy has one or more rules, and a live version is kept when any
rule keeps it:

* ``keep_last N``: the N newest live versions of the package (commit order);
* ``keep_days D``: versions committed less than D days ago. Age is measured
  from the server's commit time, never the manifest's ``created``, which a
  producer chooses and could backdate;
* ``keep_where {k: v}``: versions whose top-level metadata matches every
  pair, exactly as ``ls --where`` matches.

Whatever the policy, four things always keep a version: an active legal hold
(``holds.py``), the namespace's retention lock while the version is younger
than it, a version name that is one of the namespace's movable tags (such as
``latest``: ``namespaces.py``; the tag names whatever was pushed under it
last, and retention never deletes it), and the absence of any policy for its
package (retention deletes only what a policy was written for).

**The retention lock** (compliance mode) is a namespace's minimum keep-days.
Once set it can only grow: :func:`lock` refuses a shorter value, and no event,
route or command removes it. It binds every deletion, not only retention's
(``protection.check_deletable``); a policy may say less, the lock still wins.

**Evaluation** is a pure function (``retention_rules.evaluate``) of the
versions' facts, the policies, the locks, the movable tags and ``now``, so it
is property-tested without a database. :func:`plan` loads the facts and calls
it; :func:`apply` deletes exactly what the plan deletes, package group by
package group: each group is planned again inside its own write transaction,
so a hold, lock, policy, movable tag or push that arrived after the first plan
is honoured, and ``packages.delete_many`` re-checks holds and locks before
every tombstone.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

from sqlalchemy import ColumnElement, Connection, func, select

from artifactstore.controlplane import namespaces, packages
from artifactstore.controlplane.blobs import dereference
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.eventlog import append
from artifactstore.controlplane.protection import (
    active_holds,
    lock_days,
    serialise,
)
from artifactstore.controlplane.retention_rules import (
    VersionFacts,
    decide,
    evaluate,
)
from artifactstore.errors import RetentionLocked
from artifactstore.model import events
from artifactstore.model.clock import utc_iso
from artifactstore.model.identity import Namespace, PackageName
from artifactstore.model.retention import (
    Decision,
    PackageKey,
    RetentionPolicy,
    RetentionReport,
    RetentionSettings,
    VersionRetention,
    check_days,
    days_text,
    effective_policy,
)
from artifactstore.model.versions import VersionRecord

__all__ = [
    "VersionFacts",
    "apply",
    "decide",
    "evaluate",
    "lock",
    "plan",
    "set_policy",
    "settings",
    "version_retention",
]


# --- loading facts ----------------------------------------------------------------------------


def _policies(conn: Connection, namespace: str | None = None) -> dict[PackageKey, RetentionPolicy]:
    rp = t.retention_policies
    query = select(rp.c.namespace, rp.c.package, rp.c.policy).where(rp.c.policy.is_not(None))
    if namespace is not None:
        query = query.where(rp.c.namespace == namespace)
    return {
        (r.namespace, r.package): RetentionPolicy.from_json(json.loads(r.policy))
        for r in conn.execute(query)
    }


def _facts(
    conn: Connection,
    policies: Mapping[PackageKey, RetentionPolicy],
    namespace: str | None,
    only: Collection[PackageKey] | None,
) -> list[VersionFacts]:
    v = t.versions
    filters: list[ColumnElement[bool]] = [v.c.deleted_seq.is_(None)]
    if namespace is not None:
        filters.append(v.c.namespace == namespace)
    if only is not None:
        filters.append(v.c.namespace.in_(sorted({ns for ns, _ in only})))
        filters.append(v.c.name.in_(sorted({name for _, name in only})))
    rows = [
        r
        for r in conn.execute(
            select(v.c.id, v.c.namespace, v.c.name, v.c.version, v.c.committed_at).where(*filters)
        )
        if only is None or (r.namespace, r.name) in only
    ]
    # Metadata matters only where a keep_where rule will look at it.
    wanted: dict[PackageKey, set[str]] = {}
    for r in rows:
        key = (r.namespace, r.name)
        if key not in wanted:
            policy, _ = effective_policy(policies, *key)
            wanted[key] = {k for k, _ in policy.keep_where} if policy is not None else set()
    keys = set().union(*wanted.values()) if wanted else set()
    meta: dict[int, dict[str, str]] = {}
    if keys:
        vm = t.version_meta
        query = (
            select(vm.c.version_id, vm.c.key, vm.c.value, v.c.namespace, v.c.name)
            .join(v, v.c.id == vm.c.version_id)
            .where(vm.c.key.in_(sorted(keys)), *filters)
        )
        for m in conn.execute(query):
            if m.key in wanted.get((m.namespace, m.name), ()):
                meta.setdefault(m.version_id, {})[m.key] = m.value
    holds = active_holds(conn, None)
    return [
        VersionFacts(
            id=r.id,
            namespace=r.namespace,
            name=r.name,
            version=r.version,
            committed_at=r.committed_at,
            meta=meta.get(r.id, {}),
            holds=tuple(h for h, _ in holds.get(r.id, ())),
        )
        for r in rows
    ]


def plan(
    conn: Connection,
    now: float,
    namespace: str | None = None,
    *,
    only: Collection[PackageKey] | None = None,
) -> list[Decision]:
    """Every live version's decision at ``now`` (one namespace, some packages, or all)."""
    if namespace is not None:
        Namespace(namespace)
    policies = _policies(conn, namespace)
    scope = None if namespace is None else [namespace]
    locks = lock_days(conn, scope)
    tags = namespaces.movable_tags(conn, scope)
    return evaluate(_facts(conn, policies, namespace, only), policies, locks, now, tags=tags)


# --- apply ------------------------------------------------------------------------------------


def _groups(doomed: Mapping[PackageKey, int], batch: int) -> list[list[PackageKey]]:
    """Whole packages per group, about ``batch`` deletions (and 200 packages) at most."""
    groups: list[list[PackageKey]] = []
    current: list[PackageKey] = []
    size = 0
    for key in sorted(doomed):
        if current and (size + doomed[key] > batch or len(current) >= 200):
            groups.append(current)
            current, size = [], 0
        current.append(key)
        size += doomed[key]
    if current:
        groups.append(current)
    return groups


def apply(
    db: Database,
    now: float,
    actor: str,
    namespace: str | None = None,
    *,
    dry_run: bool = False,
    batch: int = 5000,
) -> RetentionReport:
    """Plan at ``now``; unless ``dry_run``, tombstone what the plan deletes.

    Each package group is planned again in its own write transaction, and only
    versions both plans delete are deleted: something that started keeping a
    version in between (a hold, the lock, a policy) wins, and the report shows
    the rule. Deleted versions' blobs get a fresh GC lease (a dereference).
    Long runs hold the write lock one group at a time, never for the whole run.
    """
    with db.read() as conn:
        first = plan(conn, now, namespace)
    report = RetentionReport(dry_run, utc_iso(now), first)
    if dry_run:
        return report
    doomed_ids = {d.version_id for d in first if not d.keep}
    doomed: dict[PackageKey, int] = {}
    for d in first:
        if not d.keep:
            doomed[(d.namespace, d.name)] = doomed.get((d.namespace, d.name), 0) + 1
    final: dict[int, Decision | None] = {d.version_id: d for d in first}
    for group in _groups(doomed, batch):
        with db.write() as conn:
            fresh = plan(conn, now, namespace, only=set(group))
            by_id = {d.version_id: d for d in fresh}
            for d in first:
                if not d.keep and (d.namespace, d.name) in group:
                    # Deleted now, or kept by what changed since (the report shows the rule),
                    # or None: someone else deleted it meanwhile. A version the first plan
                    # kept stays kept by this run, whatever the second plan says.
                    final[d.version_id] = by_id.get(d.version_id)
            ids = [d.version_id for d in fresh if not d.keep and d.version_id in doomed_ids]
            records = packages.get_keys(conn, ids)
            blobs = packages.file_blobs(conn, ids)  # before the tombstones drop the files
            packages.delete_many(conn, records, actor, now=now, cause="retention")
            dereference(conn, blobs, now)
    report.decisions = [d for d in final.values() if d is not None]
    return report


# --- policy and lock management ---------------------------------------------------------------


def settings(conn: Connection, namespace: Namespace) -> RetentionSettings:
    rp = t.retention_policies
    rows = conn.execute(select(rp).where(rp.c.namespace == str(namespace))).all()
    default: RetentionPolicy | None = None
    by_package: dict[str, RetentionPolicy] = {}
    days: float | None = None
    locked_at: str | None = None
    for r in rows:
        policy = None if r.policy is None else RetentionPolicy.from_json(json.loads(r.policy))
        if r.package == "":
            default = policy
            if r.locked and r.lock_days is not None:
                days, locked_at = float(r.lock_days), r.locked_at
        elif policy is not None:
            by_package[r.package] = policy
    return RetentionSettings(str(namespace), default, by_package, days, locked_at)


def set_policy(
    conn: Connection,
    namespace: Namespace,
    package: PackageName | None,
    policy: RetentionPolicy | None,
    actor: str,
) -> RetentionSettings:
    """Set (or with None clear) a namespace's default or a package's policy.

    Never touches the retention lock: a policy may keep less than the lock,
    and the lock still keeps every version younger than it.
    """
    current = settings(conn, namespace)
    existing = current.default if package is None else current.packages.get(str(package))
    if existing != policy:
        # Subject ``NS`` for the namespace default (package ""), ``NS/NAME`` for a package.
        document = None if policy is None else policy.to_json()
        name = "" if package is None else str(package)
        append(conn, events.RetentionSet(str(namespace), name, document), actor)
    return settings(conn, namespace)


def lock(conn: Connection, namespace: Namespace, keep_days: float, actor: str) -> RetentionSettings:
    """Set or extend a namespace's retention lock; a shorter one raises RetentionLocked.

    There is no unlock: the lock is compliance mode, and the point of it is
    that nobody, admins included, can take it back through artifact-store.
    """
    days = check_days(keep_days)
    serialise(conn)
    current = lock_days(conn, [str(namespace)]).get(str(namespace))
    if current is not None and days < current:
        raise RetentionLocked(
            f"namespace {namespace} has a retention lock of {days_text(current)}; "
            f"a lock can only grow, so {days_text(days)} is refused"
        )
    if current != days:
        append(conn, events.RetentionLocked(str(namespace), days), actor)
    return settings(conn, namespace)


def version_retention(conn: Connection, record: VersionRecord, now: float) -> VersionRetention:
    """The decision retention would make for one version now, at the cost of a few lookups."""
    ns, name = str(record.reference.namespace), str(record.reference.name)
    current = settings(conn, record.reference.namespace)
    policy, scope = current.effective(name)
    v = t.versions
    rank = conn.execute(
        select(func.count()).where(
            v.c.namespace == ns, v.c.name == name, v.c.deleted_seq.is_(None), v.c.id >= record.id
        )
    ).scalar_one()
    meta: dict[str, str] = {}
    if policy is not None and policy.keep_where:
        vm = t.version_meta
        meta = {
            r.key: r.value
            for r in conn.execute(
                select(vm.c.key, vm.c.value).where(
                    vm.c.version_id == record.id, vm.c.key.in_([k for k, _ in policy.keep_where])
                )
            )
        }
    holds = active_holds(conn, [record.id]).get(record.id, [])
    facts = VersionFacts(
        id=record.id,
        namespace=ns,
        name=name,
        version=str(record.reference.version),
        committed_at=record.committed_at,
        meta=meta,
        holds=tuple(h for h, _ in holds),
    )
    tags = namespaces.movable_tags(conn, [ns]).get(ns, set())
    decision = decide(facts, int(rank), policy, scope, current.lock_days, now, tags=tags)
    return VersionRetention(decision, policy, current.lock_days)
