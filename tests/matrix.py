"""The two store configurations the contract tests run in, and the CI guard over them.

"embedded" is the default a user gets with no set-up (SQLite + a local
directory); "scaleout" is the production layout of issue 18 (PostgreSQL + S3).
A module or test marked ``configs("embedded", "scaleout")`` runs once in each
(``tests/conftest.py`` parametrises the ``config`` fixture at module scope).

Where PostgreSQL or the S3 server cannot be had the scale-out tests skip, saying
why; under CI (``CI`` set) they fail instead, and so does the session if not
one scale-out test ran and passed on a store whose URLs are PostgreSQL's and
S3's (:func:`pytest_sessionfinish`): a green CI run is one that tried the
scale-out configuration, not one that skipped it quietly, deselected it, or
ran it on other engines (as it once did, on file://).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import pytest

__all__ = [
    "CONFIGS",
    "ENGINES",
    "STORE_VARIABLES",
    "StoreConfig",
    "StoreConfigs",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "scaleout",
    "scaleout_storage",
    "store_overrides",
]

#: The configurations, in the order a marked module runs in.
CONFIGS = ("embedded", "scaleout")

#: The metadata database engine of each configuration.
ENGINES = {"embedded": "sqlite", "scaleout": "postgresql"}

#: The variables that place a store (what a configuration sets), by ``Store.open`` setting.
STORE_VARIABLES = {
    f"ARTIFACTSTORE_{name.upper()}": name
    for name in ("database_url", "storage_url", "cold_storage_url")
}

#: How many scale-out tests have passed so far in this session, on PostgreSQL + S3.
_SCALEOUT_PASSED = pytest.StashKey[int]()
#: The nodes (tests, or the modules of module-scoped stores) given a scale-out store whose
#: URLs are PostgreSQL's and S3's: what a scale-out test must have to count.
_ON_POSTGRESQL_S3 = pytest.StashKey[set[str]]()


class StoreConfig(NamedTuple):
    """Where one store keeps its metadata, its hot bytes and its cold tier's; None: the
    default under its home."""

    name: str
    database_url: str | None
    storage_url: str | None
    cold_storage_url: str | None = None

    def overrides(self) -> dict[str, Any]:
        """The keyword settings of ``Store.open`` for it."""
        places = {
            "database_url": self.database_url,
            "storage_url": self.storage_url,
            "cold_storage_url": self.cold_storage_url,
        }
        return {k: v for k, v in places.items() if v is not None}

    def env(self) -> dict[str, str]:
        """The ARTIFACTSTORE_* variables of a process (CLI, server) started on it."""
        return {f"ARTIFACTSTORE_{k.upper()}": str(v) for k, v in self.overrides().items()}


def store_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``Store.open`` settings of a process environment's database and storage URLs:
    what a test needs to open, beside a server, the store that server serves."""
    return {STORE_VARIABLES[k]: v for k, v in env.items() if k in STORE_VARIABLES}


def scaleout_storage(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The hot and cold storage URLs of a new scale-out store: two prefixes of a fresh
    prefix of the session's S3 bucket (moto's server, ``tests/s3.py``), so that stores
    never meet and neither tier holds the other (the store refuses overlapping ones)."""
    from tests.s3 import s3_url  # boto3 and moto: not for the CI guard alone

    server = request.getfixturevalue("s3_server")
    store = f"store-{uuid.uuid4().hex}"
    return s3_url(server, f"{store}/hot"), s3_url(server, f"{store}/cold")


def scaleout(database_url: str, request: pytest.FixtureRequest) -> StoreConfig:
    """A scale-out store on ``database_url``: PostgreSQL metadata, both tiers in S3.

    The requesting node is noted when the URLs are those engines' (whatever produced
    them), so that the CI guard counts only scale-out tests that really ran on them.
    """
    made = StoreConfig("scaleout", database_url, *scaleout_storage(request))
    urls = (made.database_url or "", made.storage_url or "", made.cold_storage_url or "")
    if urls[0].startswith("postgresql") and all(u.startswith("s3://") for u in urls[1:]):
        request.config.stash.setdefault(_ON_POSTGRESQL_S3, set()).add(request.node.nodeid)
    return made


class StoreConfigs(contextlib.ExitStack):
    """New stores of one configuration, for tests that run servers or several stores: on
    scale-out each gets a database of its own (a copy of the session's migrated template),
    dropped when this closes. A server's store cannot share the session's database, which
    each test empties: that would pull rows from under a server that lives longer."""

    def __init__(self, name: str, request: pytest.FixtureRequest) -> None:
        super().__init__()
        self.name = name
        self._request = request

    def new(self) -> StoreConfig:
        if self.name == "embedded":
            return StoreConfig(self.name, None, None)
        from tests.pg import clone_database  # psycopg and the store: not for the CI guard alone

        template = self._request.getfixturevalue("postgresql_template")
        assert isinstance(template, str)
        return scaleout(self.enter_context(clone_database(template)), self._request)


def _config_of(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    params: dict[str, object] = callspec.params if callspec is not None else {}
    return str(params.get("config", "embedded"))


def _on_postgresql_s3(item: pytest.Item) -> bool:
    """Whether the item, or a module or class around it, was given a PostgreSQL + S3 store."""
    placed = item.config.stash.get(_ON_POSTGRESQL_S3, set())
    return any(node.nodeid in placed for node in item.listchain())


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SCALEOUT_PASSED] = 0
    session.config.stash[_ON_POSTGRESQL_S3] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Any:  # the hook's own result type (TestReport)
    """Count the scale-out tests that passed (the call phase only, not a skip or xfail)
    on a store of PostgreSQL + S3."""
    report = yield
    if (
        report.when == "call"
        and report.passed
        and not hasattr(report, "wasxfail")
        and _config_of(item) == "scaleout"
        and _on_postgresql_s3(item)
    ):
        item.config.stash[_SCALEOUT_PASSED] += 1
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, fail a session in which not one scale-out test ran and passed on a
    store of PostgreSQL + S3."""
    if not os.environ.get("CI") or session.config.option.collectonly:
        return
    passed = session.config.stash.get(_SCALEOUT_PASSED, 0)
    if passed:
        return
    message = (
        "CI is set, but not one test ran and passed in the scale-out configuration "
        "on a store of PostgreSQL + S3: the run proves nothing about it. Start PostgreSQL "
        "(TEST_POSTGRESQL_URL) and install moto's server, do not deselect those tests, "
        "and keep tests/matrix.py's scale-out stores on postgresql:// and s3:// URLs."
    )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
    if exitstatus == pytest.ExitCode.OK or exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
