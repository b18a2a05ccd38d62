"""Retention policies, the retention lock and legal holds (SPEC section 9, issue 6).

The evaluation is checked against an independent oracle over generated
histories (random ages, metadata, holds, policies and locks); the database
path is checked by applying generated plans to real stores; the lock and the
holds by every Store call that could weaken them.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.config import Settings
from artifactstore.controlplane import retention
from artifactstore.controlplane.retention import (
    VersionFacts,
    evaluate,
)
from artifactstore.errors import (
    Conflict,
    HoldNotFound,
    InvalidInput,
    LegalHold,
    Locked,
    PackageNotFound,
    RetentionLocked,
)
from artifactstore.model.clock import utc_iso
from artifactstore.model.retention import (
    NO_RULE,
    RetentionPolicy,
)
from artifactstore.store import Store
from tests.conftest import make_tree

pytestmark = pytest.mark.configs("embedded", "scaleout")

DAY = 86400.0
#: A whole second, so ages in whole hours are exact in floating point.
NOW = 1_900_000_000.0
PACKAGES = (("ci", "app"), ("ci", "lib"), ("qa", "app"))
META = st.dictionaries(
    st.sampled_from(["branch", "release"]), st.sampled_from(["main", "dev", "true"]), max_size=2
)

# --- generated histories -------------------------------------------------------------------


def _policy(draw: st.DrawFn) -> RetentionPolicy | None:
    keep_last = draw(st.none() | st.integers(1, 6))
    keep_days = draw(st.none() | st.sampled_from([0.5, 1, 3, 7, 30]))
    keep_where = draw(
        st.none() | st.dictionaries(st.just("branch"), st.sampled_from(["main", "dev"]))
    )
    if keep_last is None and keep_days is None and not keep_where:
        return None
    return RetentionPolicy.of(keep_last=keep_last, keep_days=keep_days, keep_where=keep_where)


#: Version names a namespace may mark as movable tags (the generated versions use some).
TAGS = ("latest", "stable", "v1", "v2")


@dataclass
class History:
    versions: list[VersionFacts]
    policies: dict[tuple[str, str], RetentionPolicy]
    locks: dict[str, float]
    tags: dict[str, set[str]]


@st.composite
def histories(draw: st.DrawFn) -> History:
    count = draw(st.integers(0, 30))
    versions = []
    for i in range(count):
        ns, name = draw(st.sampled_from(PACKAGES))
        age_hours = draw(st.integers(0, 60 * 24))
        # Mostly unique names; sometimes a tag name (pushed again, it names the newest).
        version = draw(st.sampled_from(["latest", "stable"]) | st.just(f"v{i}"))
        versions.append(
            VersionFacts(
                id=i + 1,
                namespace=ns,
                name=name,
                version=version,
                committed_at=utc_iso(NOW - age_hours * 3600),
                meta=draw(META),
                holds=tuple(draw(st.lists(st.integers(1000, 1100), max_size=2, unique=True))),
            )
        )
    policies: dict[tuple[str, str], RetentionPolicy] = {}
    for key in (("ci", ""), ("qa", ""), *PACKAGES):
        policy = _policy(draw)
        if policy is not None:
            policies[key] = policy
    locks = draw(st.dictionaries(st.sampled_from(["ci", "qa"]), st.sampled_from([1, 5, 20])))
    tags = draw(
        st.dictionaries(
            st.sampled_from(["ci", "qa", "other"]),
            st.sets(st.sampled_from(TAGS), min_size=1),
        )
    )
    return History(versions, policies, {k: float(v) for k, v in locks.items()}, tags)


def _age_days(v: VersionFacts) -> float:
    committed = datetime.strptime(v.committed_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (NOW - committed.timestamp()) / DAY


def oracle_keeps(h: History, v: VersionFacts) -> bool:
    """Written apart from the implementation: does anything keep ``v``?"""
    if v.holds or v.version in h.tags.get(v.namespace, ()):
        return True
    age = _age_days(v)
    lock = h.locks.get(v.namespace)
    if lock is not None and age < lock:
        return True
    policy = h.policies.get((v.namespace, v.name)) or h.policies.get((v.namespace, ""))
    if policy is None:
        return True
    siblings = [w for w in h.versions if (w.namespace, w.name) == (v.namespace, v.name)]
    newer = sum(1 for w in siblings if w.id > v.id)
    if policy.keep_last is not None and newer < policy.keep_last:
        return True
    if policy.keep_days is not None and age < policy.keep_days:
        return True
    return bool(policy.keep_where) and all(v.meta.get(k) == value for k, value in policy.keep_where)


@settings(max_examples=400, deadline=None)
@given(histories())
def test_evaluation_matches_the_oracle(h: History) -> None:
    decisions = evaluate(h.versions, h.policies, h.locks, NOW, tags=h.tags)
    assert sorted(d.version_id for d in decisions) == [v.id for v in h.versions]
    by_id = {v.id: v for v in h.versions}
    for d in decisions:
        v = by_id[d.version_id]
        # No version a rule keeps is ever deleted; nothing else is kept.
        assert d.keep == oracle_keeps(h, v), (d, v)
        assert d.keep == bool(d.rules)
        assert d.reason == (NO_RULE if not d.keep else "; ".join(d.rules))
        if v.holds:  # a held version survives any policy
            assert d.keep and d.held and any(r.startswith("legal hold") for r in d.rules)
        lock = h.locks.get(v.namespace)
        if lock is not None and _age_days(v) < lock:  # a locked-young version survives
            assert d.keep and d.locked
        if v.version in h.tags.get(v.namespace, ()):  # no movable tag is ever deleted
            assert d.keep and f"movable tag '{v.version}'" in d.rules
        else:
            assert not any(r.startswith("movable tag") for r in d.rules)


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(1, 1000))
def test_a_hold_never_turns_keep_into_delete(h: History, hold: int) -> None:
    """Adding a hold (or a lock) can only keep more."""
    before = {
        d.version_id: d.keep for d in evaluate(h.versions, h.policies, h.locks, NOW, tags=h.tags)
    }
    held = [
        VersionFacts(v.id, v.namespace, v.name, v.version, v.committed_at, v.meta, (hold,))
        if v.id % 2
        else v
        for v in h.versions
    ]
    after = evaluate(held, h.policies, {**h.locks, "ci": 60.0}, NOW, tags=h.tags)
    for d in after:
        assert d.keep or not before[d.version_id]


def test_policy_validation() -> None:
    with pytest.raises(InvalidInput, match="at least one rule"):
        RetentionPolicy.of()
    for bad in (
        {"keep_last": 0},
        {"keep_last": True},
        {"keep_days": 0},
        {"keep_days": -1},
        {"keep_days": float("nan")},
        {"keep_days": 1e9},
        {"keep_where": {"": "x"}},
    ):
        with pytest.raises(InvalidInput):
            RetentionPolicy.of(**bad)
    with pytest.raises(InvalidInput, match="unknown"):
        RetentionPolicy.from_json({"keep_last": 1, "keep_forever": True})
    with pytest.raises(InvalidInput, match="as text"):
        RetentionPolicy.from_json({"keep_where": {"release": True}})
    p = RetentionPolicy.from_json({"keep_days": 30, "keep_where": {"b": "1", "a": "2"}})
    assert p.keep_where == (("a", "2"), ("b", "1"))
    assert p.to_json() == {"keep_last": None, "keep_days": 30, "keep_where": {"a": "2", "b": "1"}}
    assert RetentionPolicy.from_json(p.to_json()) == p


# --- against a real store ----------------------------------------------------------------------


@contextmanager
def scratch_store() -> Iterator[tuple[Store, Path]]:
    with tempfile.TemporaryDirectory(prefix="retention-") as tmp:
        root = Path(tmp)
        with Store.from_config(Settings(home=root / "home", gc_grace=0.0)) as store:
            yield store, root


def push(store: Store, root: Path, ref: str, meta: dict[str, str] | None = None) -> None:
    src = make_tree(root / ref.replace("/", "_").replace(":", "_"), {"f.txt": ref})
    store.push(ref, [src], metadata=meta or {})


@dataclass
class Scenario:
    versions: list[tuple[str, dict[str, str]]]
    held: list[int]
    policies: dict[tuple[str, str | None], RetentionPolicy]
    lock: float | None
    offset_days: float


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 12))
    versions = []
    for i in range(n):
        ns, name = draw(st.sampled_from(PACKAGES))
        versions.append((f"{ns}/{name}:{i}", draw(META)))
    held = draw(st.lists(st.integers(0, n - 1), max_size=3, unique=True))
    policies: dict[tuple[str, str | None], RetentionPolicy] = {}
    for key in (("ci", None), ("qa", None), ("ci", "lib")):
        policy = _policy(draw)
        if policy is not None:
            policies[key] = policy
    lock = draw(st.none() | st.sampled_from([2.0, 10.0]))
    offset = draw(st.sampled_from([0.0, 0.25, 1.5, 5.0, 40.0]))
    return Scenario(versions, held, policies, lock, offset)


@settings(max_examples=25, deadline=None)
@given(scenarios())
def test_apply_deletes_exactly_the_plan(sc: Scenario) -> None:
    """At the same time, apply deletes what plan deletes: never a held or locked version."""
    with scratch_store() as (store, root):
        for ref, meta in sc.versions:
            push(store, root, ref, meta)
        held = {sc.versions[i][0] for i in sc.held}
        for ref in held:
            store.place_hold(ref, "litigation")
        for (ns, package), policy in sc.policies.items():
            store.set_retention(ns, package, policy)
        if sc.lock is not None:
            store.lock_retention("ci", sc.lock)
        now = time.time() + sc.offset_days * DAY  # every version is about offset_days old
        with store.db.read() as conn:
            planned = retention.plan(conn, now)
        doomed = {d.reference for d in planned if not d.keep}
        assert not doomed & held
        if sc.lock is not None and sc.offset_days < sc.lock:
            assert not any(d.namespace == "ci" for d in planned if not d.keep)
        report = retention.apply(store.db, now, "tester")
        assert {d.reference for d in report.deleted} == doomed
        live = {str(r.reference) for r in store.iter_query()}
        assert live == {ref for ref, _ in sc.versions} - doomed
        deletions = [e for e in store.events() if e.type == "package.deleted"]
        assert {e.subject for e in deletions} == doomed
        assert all(e.payload["cause"] == "retention" and e.actor == "tester" for e in deletions)
        # A second run finds nothing more to delete.
        assert not retention.apply(store.db, now, "tester").deleted


def test_apply_honours_a_hold_placed_after_the_plan(store: Store, tmp_path: Path) -> None:
    for i in range(4):
        push(store, tmp_path, f"ci/app:{i}")
    store.set_retention("ci", None, RetentionPolicy.of(keep_last=1))
    plan = store.retention_plan("ci")
    assert [d.reference for d in plan.deleted] == ["ci/app:2", "ci/app:1", "ci/app:0"]
    store.place_hold("ci/app:1", "late hold")
    report = store.apply_retention("ci")
    assert [d.reference for d in report.deleted] == ["ci/app:2", "ci/app:0"]
    kept = {d.reference: d.reason for d in report.kept}
    assert kept["ci/app:1"].startswith("legal hold #")
    assert {str(r.reference) for r in store.iter_query()} == {"ci/app:3", "ci/app:1"}


def test_package_policy_replaces_the_namespace_default(store: Store, tmp_path: Path) -> None:
    for name in ("app", "lib", "doc"):
        for i in range(3):
            push(store, tmp_path, f"ci/{name}:{i}", {"branch": "main" if i == 0 else "dev"})
    store.set_retention("ci", None, RetentionPolicy.of(keep_last=1))
    store.set_retention("ci", "lib", RetentionPolicy.of(keep_where={"branch": "main"}))
    plan = {d.reference: d for d in store.retention_plan().decisions}
    assert plan["ci/app:2"].keep and not plan["ci/app:1"].keep and not plan["ci/app:0"].keep
    # lib's own policy does not inherit keep_last=1 from the default.
    assert not plan["ci/lib:2"].keep and not plan["ci/lib:1"].keep and plan["ci/lib:0"].keep
    assert plan["ci/lib:0"].policy_scope == "package" and plan["ci/app:2"].policy_scope == (
        "namespace"
    )
    store.set_retention("ci", None, None)  # no default any more: app and doc keep everything
    plan = {d.reference: d for d in store.retention_plan().decisions}
    assert plan["ci/app:0"].keep and plan["ci/app:0"].rules == ("no retention policy",)
    assert not plan["ci/lib:1"].keep


# --- the lock -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockTo:
    days: float


@dataclass(frozen=True)
class SetPolicy:
    package: str | None
    keep_last: int | None


@dataclass(frozen=True)
class Apply:
    pass


@dataclass(frozen=True)
class Delete:
    index: int


@dataclass(frozen=True)
class NamespaceSettings:
    pass


LockOp = LockTo | SetPolicy | Apply | Delete | NamespaceSettings
lock_ops = st.one_of(
    st.builds(LockTo, st.sampled_from([0.5, 1.0, 3.0, 7.0, 30.0])),
    st.builds(SetPolicy, st.none() | st.just("app"), st.none() | st.integers(1, 2)),
    st.just(Apply()),
    st.builds(Delete, st.integers(0, 3)),
    st.just(NamespaceSettings()),
)


@settings(max_examples=30, deadline=None)
@given(st.lists(lock_ops, min_size=1, max_size=12))
def test_the_lock_only_grows_and_always_binds(program: list[LockOp]) -> None:
    """No sequence of Store calls shortens or removes the lock or deletes a young version."""
    with scratch_store() as (store, root):
        refs = [f"ci/app:{i}" for i in range(4)]
        for ref in refs:
            push(store, root, ref)
        lock: float | None = None
        live = set(refs)
        for op in program:
            match op:
                case LockTo(days):
                    if lock is not None and days < lock:
                        with pytest.raises(RetentionLocked, match="can only grow"):
                            store.lock_retention("ci", days)
                    else:
                        store.lock_retention("ci", days)
                        lock = days
                case SetPolicy(package, keep_last):
                    policy = None if keep_last is None else RetentionPolicy.of(keep_last=keep_last)
                    store.set_retention("ci", package, policy)
                case Apply():
                    report = store.apply_retention()
                    if lock is not None:
                        assert not report.deleted  # every version is younger than any lock
                    live -= {d.reference for d in report.deleted}
                case Delete(index) if refs[index] in live:
                    if lock is not None:
                        with pytest.raises(RetentionLocked):
                            store.delete(refs[index])
                    else:
                        store.delete(refs[index])
                        live.discard(refs[index])
                case NamespaceSettings():
                    with pytest.raises(InvalidInput):  # namespace settings cannot carry it
                        store.set_namespace_settings("ci", {"retention_lock": None})
            current = store.retention_settings("ci").lock_days
            assert current == lock
        assert {str(r.reference) for r in store.iter_query()} == live
        store.rebuild()
        assert store.retention_settings("ci").lock_days == lock


def test_locked_delete_names_the_lock_and_its_end(store: Store, tmp_path: Path) -> None:
    push(store, tmp_path, "ci/app:1")
    push(store, tmp_path, "qa/app:1")
    settings_ = store.lock_retention("ci", 30)
    assert settings_.lock_days == 30 and settings_.locked_at
    with pytest.raises(RetentionLocked) as caught:
        store.delete("ci/app:1")
    assert "30 days" in caught.value.detail and caught.value.locked_until
    assert caught.value.code == "retention_locked" and isinstance(caught.value, Locked)
    assert caught.value.locked_until > store.show("ci/app:1").committed_at
    store.delete("qa/app:1")  # other namespaces are not bound
    store.lock_retention("ci", 30)  # the same lock again: no new event
    store.lock_retention("ci", 45.5)
    assert [e.payload["keep_days"] for e in store.events() if e.type == "retention.locked"] == [
        30,
        45.5,
    ]
    store.set_retention("ci", None, RetentionPolicy.of(keep_last=1))
    store.set_retention("ci", None, None)  # clearing the policy leaves the lock
    assert store.retention_settings("ci").lock_days == 45.5
    state = store.version_retention(store.show("ci/app:1"))[1].to_json()
    assert state["locked"] and state["locked_until"] and state["action"] == "keep"


# --- holds --------------------------------------------------------------------------------------


def test_holds_stack_and_release_one_by_one(store: Store, tmp_path: Path) -> None:
    push(store, tmp_path, "ci/app:1")
    first = store.place_hold("ci/app:1", "case 17", actor="legal")
    second = store.place_hold("ci/app:1", "audit 2024", actor="audit")
    assert first.id < second.id and first.active and first.actor == "legal"
    with pytest.raises(LegalHold) as caught:
        store.delete("ci/app:1", actor="global-admin")
    assert caught.value.code == "legal_hold"
    assert [h["id"] for h in caught.value.holds] == [first.id, second.id]
    assert f"#{first.id}" in caught.value.detail and "case 17" in caught.value.detail
    with pytest.raises(Conflict, match="name the one"):  # ambiguous: nothing released
        store.release_hold("ci/app:1", "done")
    assert len(store.list_holds("ci/app:1")) == 2
    with pytest.raises(HoldNotFound):
        store.release_hold("ci/app:1", "done", hold_id=second.id + 100)
    released = store.release_hold("ci/app:1", "case closed", hold_id=first.id, actor="legal")
    assert not released.active and released.release_reason == "case closed"
    assert released.released_by == "legal"
    with pytest.raises(LegalHold, match="audit 2024"):
        store.delete("ci/app:1")
    store.release_hold("ci/app:1", "audit over")  # the only active one now: no id needed
    with pytest.raises(HoldNotFound):
        store.release_hold("ci/app:1", "again")
    assert store.list_holds() == []
    assert [h.id for h in store.list_holds(include_released=True)] == [first.id, second.id]
    store.delete("ci/app:1")
    with pytest.raises(PackageNotFound):
        store.place_hold("ci/app:1", "too late")


def test_hold_reasons_are_checked(store: Store, tmp_path: Path) -> None:
    push(store, tmp_path, "ci/app:1")
    for bad in ("", "   ", "two\nlines", "x" * 1025):
        with pytest.raises(InvalidInput):
            store.place_hold("ci/app:1", bad)
    assert store.place_hold("ci/app:1", "  trimmed  ").reason == "trimmed"


def test_held_version_is_kept_by_retention_and_shown(store: Store, tmp_path: Path) -> None:
    for i in range(3):
        push(store, tmp_path, f"ci/app:{i}")
    hold = store.place_hold("ci/app:0", "keep me")
    store.set_retention("ci", "app", RetentionPolicy.of(keep_last=1))
    holds, state = store.version_retention(store.show("ci/app:0"))
    assert [h.id for h in holds] == [hold.id]
    body = state.to_json()
    assert body["held"] and body["action"] == "keep" and body["policy_scope"] == "package"
    assert body["rules"] == [f"legal hold #{hold.id}"]
    report = store.apply_retention()
    assert [d.reference for d in report.deleted] == ["ci/app:1"]
    _, state = store.version_retention(store.show("ci/app:2"))
    assert state.to_json()["rules"] == ["keep_last=1 (newest #1)"]


def test_movable_tags_are_kept_by_retention(store: Store, tmp_path: Path) -> None:
    store.set_namespace_settings("ci", {"movable_tags": ["latest", "stable"]})
    push(store, tmp_path, "ci/app:latest")  # the oldest: only its tag keeps it
    for i in range(3):
        push(store, tmp_path, f"ci/app:{i}")
    push(store, tmp_path, "qa/app:latest")  # qa has no movable tags
    push(store, tmp_path, "qa/app:1")
    for ns in ("ci", "qa"):
        store.set_retention(ns, None, RetentionPolicy.of(keep_last=1))
    plan = {d.reference: d for d in store.retention_plan().decisions}
    assert plan["ci/app:latest"].keep and plan["ci/app:latest"].rules == ("movable tag 'latest'",)
    assert plan["ci/app:2"].rules == ("keep_last=1 (newest #1)",)
    assert not plan["qa/app:latest"].keep  # a version name is only a tag where it is declared
    _, state = store.version_retention(store.show("ci/app:latest"))
    assert state.to_json()["rules"] == ["movable tag 'latest'"]
    assert state.to_json()["action"] == "keep"
    report = store.apply_retention()
    assert {d.reference for d in report.deleted} == {"ci/app:0", "ci/app:1", "qa/app:latest"}
    # Moving the tag commits the newest version: keep_last counts it like any other.
    moved = make_tree(tmp_path / "moved", {"f.txt": "new latest"})
    assert store.push("ci/app:latest", [moved]).created
    report = store.apply_retention("ci", dry_run=True)
    assert [d.reference for d in report.deleted] == ["ci/app:2"]
    kept = {d.reference: d.reason for d in report.kept}
    assert kept == {"ci/app:latest": "movable tag 'latest'; keep_last=1 (newest #1)"}
    # Once the name is no longer a tag, only the policy decides.
    push(store, tmp_path, "ci/app:3")
    store.set_namespace_settings("ci", {"movable_tags": ["stable"]})
    deleted = [d.reference for d in store.apply_retention("ci").deleted]
    assert deleted == ["ci/app:latest", "ci/app:2"]


def test_holds_and_policies_survive_rebuild(store: Store, tmp_path: Path) -> None:
    push(store, tmp_path, "ci/app:1")
    push(store, tmp_path, "ci/app:2")
    a = store.place_hold("ci/app:1", "a")
    store.place_hold("ci/app:1", "b")
    store.release_hold("ci/app:1", "a done", hold_id=a.id)
    store.set_retention("ci", None, RetentionPolicy.of(keep_days=7, keep_where={"k": "v"}))
    store.set_retention("ci", "app", RetentionPolicy.of(keep_last=3))
    store.set_retention("qa", None, RetentionPolicy.of(keep_last=3))
    store.set_retention("qa", None, None)
    store.lock_retention("ci", 3)
    before = (
        [h.to_json() for h in store.list_holds(include_released=True)],
        store.retention_settings("ci").to_json(),
        store.retention_settings("qa").to_json(),
    )
    store.rebuild()
    after = (
        [h.to_json() for h in store.list_holds(include_released=True)],
        store.retention_settings("ci").to_json(),
        store.retention_settings("qa").to_json(),
    )
    assert after == before
    assert json.dumps(before)  # plain JSON all the way
