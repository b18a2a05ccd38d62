"""The served OpenAPI models match the JSON the model's values render.

Most response models are derived from the value types (``server/shapes.py``).
Those still written by hand (their JSON form is not their fields) must name
exactly the keys ``to_json`` sends, at every level: this fails when one of the
two changes without the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from artifactstore.model.records import GcReport, Hold, TierReport, TokenInfo
from artifactstore.model.retention import RetentionPolicy
from artifactstore.server.routes.events import GcOut
from artifactstore.server.routes.packages import VersionOut
from artifactstore.server.routes.retention import (
    ApplyOut,
    DecisionOut,
    HoldOut,
    RetentionOut,
)
from artifactstore.server.routes.tiers import TierReportOut
from artifactstore.server.routes.tokens import TokenOut
from artifactstore.store import Store
from tests.conftest import make_tree

pytestmark = pytest.mark.configs("embedded", "scaleout")


def assert_same_keys(model: type[BaseModel], body: dict[str, Any]) -> None:
    assert set(model.model_fields) == set(body), model.__name__
    model.model_validate(body)


def test_hand_written_models_name_exactly_what_the_values_send(
    store: Store, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "alpha"})
    record = store.push("ci/app:1", [src], metadata={"branch": "main"}).record
    store.push("ci/app:2", [src])
    assert_same_keys(VersionOut, record.summary())
    store.set_retention("ci", None, RetentionPolicy.of(keep_last=1))
    store.lock_retention("ci", 1)
    settings = store.retention_settings("ci").to_json()
    assert_same_keys(RetentionOut, settings)
    plan = store.retention_plan("ci").to_json()
    assert_same_keys(ApplyOut, plan)
    assert plan["decisions"]
    for decision in plan["decisions"]:
        assert_same_keys(DecisionOut, decision)


def test_derived_models_name_exactly_what_the_values_send(store: Store, tmp_path: Path) -> None:
    """The derived ones too: a computed key (``Hold.active``) must be in both."""
    src = make_tree(tmp_path / "src", {"a.txt": "alpha"})
    store.push("ci/app:1", [src])
    hold = store.place_hold("ci/app:1", "case 1")
    info, _secret = store.create_token("bot", ["ci:read"])
    tiers = store.tier_move("ci/app:1", "cold")
    gc = store.gc(dry_run=True)
    pairs: list[tuple[type[BaseModel], Any]] = [
        (HoldOut, hold),
        (TokenOut, info),
        (TierReportOut, tiers),
        (GcOut, gc),
    ]
    for model, value in pairs:
        assert isinstance(value, Hold | TokenInfo | TierReport | GcReport)
        assert_same_keys(model, value.to_json())
    assert set(HoldOut.model_fields) >= {"active", "released_at"}
