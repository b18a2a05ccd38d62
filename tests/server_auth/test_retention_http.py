"""Legal holds, retention policies and the retention lock over HTTP, authentication on.

A real ``artifactstore serve`` process (the helpers of test_permissions.py);
each test works in its own namespace, because a retention lock is forever.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTSTORE
from tests.matrix import StoreConfigs
from tests.server.conftest import assert_problem
from tests.server_auth.test_permissions import AuthServer, _client, _push, _start, _token, _tree

pytestmark = pytest.mark.configs("embedded", "scaleout")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store_configs: StoreConfigs
) -> Iterator[AuthServer]:
    root = tmp_path_factory.mktemp("retention-server")
    env = {**store_configs.new().env(), "ARTIFACTSTORE_AUTH_FAILURES_PER_MINUTE": "100000"}
    srv = _start(root / "home", root / "server.log", env)
    yield srv
    os.killpg(srv.process.pid, signal.SIGTERM)
    try:
        srv.process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(srv.process.pid, signal.SIGKILL)


def _versions(server: AuthServer, tmp: Path, ns: str, count: int) -> None:
    _, writer = _token(server, f"{ns}-writer", [f"{ns}:write", f"{ns}:read"])
    for i in range(count):
        tree = _tree(tmp / f"{ns}-{i}", {"f.txt": f"{ns} {i}".encode()})
        result = _push(server, writer, f"{ns}/app:{i}", tree)
        assert result.returncode == 0, result.stderr


def test_holds_stack_and_block_even_the_global_admin(server: AuthServer, tmp_path: Path) -> None:
    _versions(server, tmp_path, "hq", 2)
    _, ns_admin = _token(server, "hq-admin", ["hq:admin"])
    _, writer = _token(server, "hq-w", ["hq:write", "hq:read", "hq:delete"])
    _, reader = _token(server, "hq-r", ["hq:read"])
    holds = "/v1/packages/hq/app/0/holds"
    with _client(server, writer) as w:
        assert_problem(w.post(holds, json={"reason": "mine"}), 403, "forbidden")
    with _client(server, ns_admin) as a:
        assert_problem(a.post(holds, json={}), 422, "invalid_input")
        assert_problem(a.post(holds, json={"reason": "x", "extra": 1}), 422, "invalid_input")
        first = a.post(holds, json={"reason": "case 17"})
        second = a.post(holds, json={"reason": "audit"})
        assert first.status_code == second.status_code == 201, first.text
        ids = [first.json()["id"], second.json()["id"]]
        assert first.json()["actor"].startswith("token:hq-admin#")
    with _client(server, reader) as r:
        detail = r.get("/v1/packages/hq/app/0").json()
        assert [h["id"] for h in detail["holds"]] == ids
        assert detail["retention"]["held"] and detail["retention"]["action"] == "keep"
        assert [h["reason"] for h in r.get(holds).json()["items"]] == ["case 17", "audit"]
        assert_problem(r.post(holds, json={"reason": "x"}), 403, "forbidden")
    with _client(server, server.admin) as admin, _client(server, writer) as w:
        for who in (admin, w):  # the global admin is refused like anyone else
            refused = assert_problem(who.delete("/v1/packages/hq/app/0"), 423, "legal_hold")
            assert [h["id"] for h in refused["holds"]] == ids
            assert f"#{ids[0]}" in refused["detail"] and "case 17" in refused["detail"]
        ambiguous = assert_problem(admin.delete(holds, params={"reason": "done"}), 409)
        assert str(ids[0]) in ambiguous["detail"] and str(ids[1]) in ambiguous["detail"]
        assert_problem(admin.delete(holds), 422, "invalid_input")  # a reason is required
        assert_problem(
            admin.delete(holds, params={"reason": "x", "id": 999999}), 404, "hold_not_found"
        )
        released = admin.request("DELETE", holds, json={"reason": "closed", "id": ids[0]})
        assert released.status_code == 200 and released.json()["active"] is False
        assert released.json()["released_by"].startswith("token:")
        assert_problem(admin.delete("/v1/packages/hq/app/0"), 423, "legal_hold")
        assert admin.delete(holds, params={"reason": "audit over"}).status_code == 200
        assert admin.delete("/v1/packages/hq/app/0").status_code == 204
        assert_problem(admin.post(holds, json={"reason": "late"}), 404, "package_not_found")
    with _client(server, reader) as r:
        history = r.get("/v1/holds", params={"namespace": "hq", "all": "true"}).json()["items"]
        assert [h["id"] for h in history] == ids and not any(h["active"] for h in history)
        assert r.get("/v1/holds", params={"namespace": "hq"}).json()["items"] == []
        assert_problem(r.get("/v1/holds", params={"namespace": "other"}), 403, "forbidden")


def test_the_lock_only_grows_over_http(server: AuthServer, tmp_path: Path) -> None:
    _versions(server, tmp_path, "lk", 3)
    _, ns_admin = _token(server, "lk-admin", ["lk:admin"])
    lock = "/v1/namespaces/lk/retention/lock"
    with _client(server, ns_admin) as a:
        assert_problem(a.put(lock, json={"keep_days": 30}), 403, "forbidden")  # global only
        policy = a.put("/v1/namespaces/lk/retention", json={"policy": {"keep_last": 1}})
        assert policy.status_code == 200 and policy.json()["default"]["keep_last"] == 1
        assert_problem(a.post("/v1/retention/apply?dry_run=true"), 403, "forbidden")
    with _client(server, server.admin) as admin:
        assert_problem(admin.put(lock, json={"keep_days": 0}), 422, "invalid_input")
        assert admin.put(lock, json={"keep_days": 30}).json()["lock"]["keep_days"] == 30
        shorter = assert_problem(admin.put(lock, json={"keep_days": 10}), 423, "retention_locked")
        assert "only grow" in shorter["detail"]
        assert admin.delete(lock).status_code == 405  # there is no unlock
        assert_problem(admin.put(lock, json={}), 422)
        # Neither clearing the policy nor the namespace settings route touches the lock.
        cleared = admin.put("/v1/namespaces/lk/retention", json={"policy": None})
        assert cleared.json()["default"] is None and cleared.json()["lock"]["keep_days"] == 30
        assert_problem(
            admin.put("/v1/namespaces/lk", json={"anonymous_read": False, "retention": None}),
            422,
        )
        assert admin.get("/v1/namespaces/lk/retention").json()["lock"]["keep_days"] == 30
        refused = assert_problem(admin.delete("/v1/packages/lk/app/0"), 423, "retention_locked")
        assert refused["locked_until"] and "30 days" in refused["detail"]
        admin.put(
            "/v1/namespaces/lk/retention", json={"package": "app", "policy": {"keep_last": 1}}
        )
        report = admin.post("/v1/retention/apply", params={"namespace": "lk"}).json()
        assert report["dry_run"] is False and report["deleted"] == 0 and report["versions"] == 3
        assert all("retention lock (30 days)" in d["rules"] for d in report["decisions"])
        detail = admin.get("/v1/packages/lk/app/0").json()["retention"]
        assert detail["locked"] and detail["locked_until"] == refused["locked_until"]
        assert detail["policy_scope"] == "package"
        assert admin.put(lock, json={"keep_days": 31.5}).json()["lock"]["keep_days"] == 31.5


def _cli(
    server: AuthServer, token: str, cache: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env.update(
        {
            "ARTIFACTSTORE_URL": server.url,
            "ARTIFACTSTORE_TOKEN": token,
            "XDG_CACHE_HOME": str(cache),
        }
    )
    result = subprocess.run(
        [str(ARTIFACTSTORE), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_remote_cli_retention_and_holds(server: AuthServer, tmp_path: Path) -> None:
    _versions(server, tmp_path, "rc", 3)
    admin = server.admin

    def ok(*args: str) -> str:
        result = _cli(server, admin, tmp_path, *args)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    ok("retention", "set", "rc", "--keep-last", "1")
    shown = json.loads(ok("retention", "show", "rc/app", "--json"))
    assert shown["effective"] == {
        "package": "app",
        "policy": shown["default"],
        "scope": "namespace",
    }
    hold = json.loads(ok("hold", "set", "rc/app:0", "--reason", "remote hold", "--json"))
    refused = _cli(server, admin, tmp_path, "rm", "rc/app:0")
    assert refused.returncode == 1 and "(legal_hold)" in refused.stderr
    assert f"#{hold['id']}" in refused.stderr
    assert [h["id"] for h in json.loads(ok("hold", "list", "--json"))] == [hold["id"]]
    plan = json.loads(ok("retention", "apply", "rc", "--dry-run", "--json"))
    assert [d["reference"] for d in plan["decisions"] if d["action"] == "delete"] == ["rc/app:1"]
    assert plan["dry_run"]
    done = json.loads(ok("retention", "apply", "rc", "--json"))
    assert done["deleted"] == 1 and not done["dry_run"]
    ok("hold", "release", "rc/app:0", "--reason", "remote release")
    assert json.loads(ok("hold", "list", "rc/app:0", "--all", "--json"))[0]["active"] is False
    ok("retention", "lock", "rc", "--keep-days", "2", "--yes")
    shorter = _cli(server, admin, tmp_path, "retention", "lock", "rc", "--keep-days", "1", "--yes")
    assert shorter.returncode == 1 and "(retention_locked)" in shorter.stderr
    locked = _cli(server, admin, tmp_path, "rm", "rc/app:0")
    assert locked.returncode == 1 and "(retention_locked)" in locked.stderr
    _, ns_admin = _token(server, "rc-admin", ["rc:admin"])
    forbidden = _cli(
        server, ns_admin, tmp_path, "retention", "lock", "rc", "--keep-days", "9", "--yes"
    )
    assert forbidden.returncode == 1 and "(forbidden)" in forbidden.stderr
