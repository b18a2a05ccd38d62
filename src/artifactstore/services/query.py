"""Queries over live versions, and the metadata schemas they are validated against."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Unpack

from artifactstore.controlplane import schemas, versionquery
from artifactstore.errors import LimitExceeded
from artifactstore.model.records import QueryArgs
from artifactstore.model.versions import Page, VersionRecord
from artifactstore.services.core import Core

__all__ = ["QueryService"]


def _check_bounds(args: QueryArgs, max_filters: int) -> None:
    """Refuse a query with more metadata filters than ``max_filters`` (LimitExceeded).

    Each filter is one more condition in the SQL: past about 980 SQLite refuses
    the statement, and well before that one request costs far more than a page.
    """
    where = args.get("where") or {}
    if len(where) > max_filters:
        raise LimitExceeded(
            f"{len(where)} metadata filters is more than the limit of {max_filters} per "
            "query (setting max_query_filters)"
        )


class QueryService:
    def __init__(self, core: Core) -> None:
        self._core = core

    def query(
        self, *, readable: Collection[str] | None = None, **args: Unpack[QueryArgs]
    ) -> Page[VersionRecord]:
        """Live versions, newest first; ``readable`` limits them to those namespaces.

        Every caller (HTTP, CLI, library) passes here, so the bounds are checked here.
        """
        _check_bounds(args, self._core.settings.max_query_filters)
        with self._core.db.read() as conn:
            return versionquery.query(conn, namespaces=readable, **args)

    def register_schema(self, variant: str, schema: Any, actor: str | None = None) -> bool:
        with self._core.db.write() as conn:
            return schemas.register(conn, variant, schema, actor or self._core.actor)

    def get_schema(self, variant: str) -> dict[str, Any]:
        with self._core.db.read() as conn:
            return schemas.get(conn, variant)

    def list_schemas(self) -> list[dict[str, str]]:
        with self._core.db.read() as conn:
            return schemas.list_ids(conn)
