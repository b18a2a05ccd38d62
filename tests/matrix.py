"""The two store configurations the contract tests run in, and the CI guard over them.

"embedded" is the default a user gets with no set-up (SQLite + a local
directory); "scaleout" is the production layout of issue 18 (PostgreSQL + S3).
A module or test marked ``configs("embedded", "scaleout")`` runs once in each
(``tests/conftest.py`` parametrises the ``config`` fixture at module scope).

Where PostgreSQL or the S3 server cannot be had the scale-out tests skip, saying
why; under CI (``CI`` set) they fail instead, and so does the session if not
one scale-out test ran and passed (:func:`pytest_sessionfinish`): a green CI
run is one that tried the scale-out configuration, not one that skipped it
quietly or deselected it.
"""

from __future__ import annotations

import contextlib
import os
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
    "scaleout_storage",
    "store_overrides",
]

#: The configurations, in the order a marked module runs in.
CONFIGS = ("embedded", "scaleout")

#: The metadata database engine of each configuration.
ENGINES = {"embedded": "sqlite", "scaleout": "postgresql"}

#: The variables that place a store (what a configuration sets), by ``Store.open`` setting.
STORE_VARIABLES = {
    f"ARTIFACTSTORE_{name.upper()}": name for name in ("database_url", "storage_url")
}

#: How many scale-out tests have passed so far in this session.
_SCALEOUT_PASSED = pytest.StashKey[int]()


class StoreConfig(NamedTuple):
    """Where one store keeps its metadata and its bytes; None: the default under its home."""

    name: str
    database_url: str | None
    storage_url: str | None

    def overrides(self) -> dict[str, Any]:
        """The keyword settings of ``Store.open`` for it."""
        out: dict[str, Any] = {}
        if self.database_url is not None:
            out["database_url"] = self.database_url
        if self.storage_url is not None:
            out["storage_url"] = self.storage_url
        return out

    def env(self) -> dict[str, str]:
        """The ARTIFACTSTORE_* variables of a process (CLI, server) started on it."""
        return {f"ARTIFACTSTORE_{k.upper()}": str(v) for k, v in self.overrides().items()}


def store_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``Store.open`` settings of a process environment's database and storage URLs:
    what a test needs to open, beside a server, the store that server serves."""
    return {STORE_VARIABLES[k]: v for k, v in env.items() if k in STORE_VARIABLES}


def scaleout_storage(request: pytest.FixtureRequest) -> str | None:
    """The hot storage URL of a scale-out store: a fresh prefix of the session's S3 bucket.

    None (file:// under the store's home) until the S3 hot backend lands
    (branch h18-s3hot: ``open_data_plane`` refuses an s3:// STORAGE_URL before it);
    then the body is the line in the comment below (``s3_url`` of ``tests/s3.py``), a
    fresh prefix so that stores never meet.
    """
    # return s3_url(request.getfixturevalue("s3_server"), f"store-{uuid.uuid4().hex}")
    del request
    return None


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
        url = self.enter_context(clone_database(template))
        return StoreConfig(self.name, url, scaleout_storage(self._request))


def _config_of(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    params: dict[str, object] = callspec.params if callspec is not None else {}
    return str(params.get("config", "embedded"))


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SCALEOUT_PASSED] = 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Any:  # the hook's own result type (TestReport)
    """Count the scale-out tests that passed (the call phase only, not a skip or xfail)."""
    report = yield
    if (
        report.when == "call"
        and report.passed
        and not hasattr(report, "wasxfail")
        and _config_of(item) == "scaleout"
    ):
        item.config.stash[_SCALEOUT_PASSED] += 1
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, fail a session in which not one scale-out test ran and passed."""
    if not os.environ.get("CI") or session.config.option.collectonly:
        return
    passed = session.config.stash.get(_SCALEOUT_PASSED, 0)
    if passed:
        return
    message = (
        "CI is set, but not one test ran and passed in the scale-out configuration "
        "(PostgreSQL + S3): the run proves nothing about it. Start PostgreSQL "
        "(TEST_POSTGRESQL_URL) and install moto's server, and do not deselect those tests."
    )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
    if exitstatus == pytest.ExitCode.OK or exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
