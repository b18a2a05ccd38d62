"""Namespace quotas over HTTP (SPEC sections 4 and 9).

Every way bytes reach a namespace is refused with 413 ``quota_exceeded`` when
they cannot fit, before anything is stored: a declared upload length at
creation (tus or plain), a one-shot body's Content-Length, a deferred length
at completion, and a commit of blobs the namespace does not hold. The module's
server is the app ``serve --no-auth`` runs (every caller is a global admin), in
this process, with the default grace period, so uploads keep counting for the
whole module; concurrent pushes by RemoteStore clients go to a real server
process (``live_server``), and so does the remote CLI: a second real server,
with authentication, checks who may change a quota and who sees the gauges.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from artifactstore.client.remote import RemoteStore
from artifactstore.controlplane.db.tables import upload_sessions
from artifactstore.errors import QuotaExceeded
from tests.conftest import ARTIFACTSTORE, make_tree
from tests.matrix import StoreConfigs
from tests.server.conftest import (
    InProcessServer,
    Server,
    assert_problem,
    digests_of,
    make_manifest,
    put_manifest,
    upload_blob,
)
from tests.server_auth.test_permissions import AuthServer, _client, _start, _token
from tests.stored import Stored

pytestmark = pytest.mark.configs("embedded", "scaleout")

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"


def set_quota(http: httpx.Client, ns: str, quota: int | None, **more: Any) -> dict[str, Any]:
    response = http.put(f"/v1/namespaces/{ns}", json={"quota_bytes": quota, **more})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def used(http: httpx.Client, ns: str) -> int:
    return int(http.get(f"/v1/namespaces/{ns}").json()["used_bytes"])


def stored_files(server: Server | InProcessServer) -> set[str]:
    """Every object of the server's storage: published blobs, staged and temporary bytes."""
    return Stored.at(server.home, server.env).everything()


def sessions(server: Server | InProcessServer, ns: str) -> int:
    """Upload sessions recorded for ``ns``, read from the server's database beside it."""
    table = upload_sessions
    with server.open_store(create=False) as store, store.db.read() as conn:
        count: int = conn.execute(
            select(func.count()).select_from(table).where(table.c.namespace == ns)
        ).scalar_one()
        return count


def blob_events(http: httpx.Client, blake3: str) -> list[str]:
    events = http.get("/v1/events", params={"limit": 1000}).json()["events"]
    return [e["type"] for e in events if e["subject"] == blake3]


def refused(response: httpx.Response, quota: int, used_bytes: int) -> None:
    body = assert_problem(response, 413, "quota_exceeded")
    assert (body["quota_bytes"], body["used_bytes"]) == (quota, used_bytes), body


# --- refusals before any byte is stored --------------------------------------------------------


def test_upload_creation_over_the_remaining_quota_is_refused_before_any_byte(
    server: InProcessServer, http: httpx.Client
) -> None:
    ns = "q-create"
    set_quota(http, ns, 1000)
    upload_blob(http, os.urandom(400), ns)
    before = stored_files(server)
    plain = http.post("/v1/uploads", params={"namespace": ns}, headers={"Upload-Length": "601"})
    refused(plain, 1000, 400)
    # tus creation-with-upload, the namespace in the tus metadata: refused before the body.
    tus = http.post(
        "/v1/uploads",
        headers={
            **TUS,
            "Upload-Length": "601",
            "Upload-Metadata": "namespace " + base64.b64encode(ns.encode()).decode(),
            "Content-Type": OFFSET_TYPE,
        },
        content=os.urandom(601),
    )
    refused(tus, 1000, 400)
    assert sessions(server, ns) == 0
    assert stored_files(server) == before
    # Exactly the room left is accepted.
    fits = http.post("/v1/uploads", params={"namespace": ns}, headers={"Upload-Length": "600"})
    assert fits.status_code == 201, fits.text
    assert sessions(server, ns) == 1


def test_one_shot_upload_over_the_quota_is_refused(
    server: InProcessServer, http: httpx.Client
) -> None:
    ns = "q-oneshot"
    set_quota(http, ns, 1000)
    before = stored_files(server)
    data = os.urandom(1001)
    refused(http.post("/v1/blobs", params={"namespace": ns}, content=data), 1000, 0)

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused once the bytes are in
        yield data[:500]
        yield data[500:]

    refused(http.post("/v1/blobs", params={"namespace": ns}, content=chunks()), 1000, 0)
    b3 = digests_of(data)[0]
    assert http.head(f"/v1/blobs/{b3}").status_code == 404  # a global admin sees every blob
    assert blob_events(http, b3) == []
    assert stored_files(server) == before
    assert used(http, ns) == 0
    upload_blob(http, data[:1000], ns)
    assert used(http, ns) == 1000


def test_deferred_length_upload_is_refused_as_its_bytes_arrive(
    server: InProcessServer, http: httpx.Client
) -> None:
    """Each PATCH counts the session's bytes against the quota (issue 17): a session
    without a length can no longer stage past the quota and be refused only at the end."""
    ns = "q-deferred"
    set_quota(http, ns, 1000)
    data = os.urandom(1001)
    created = http.post(
        "/v1/uploads", params={"namespace": ns}, headers={**TUS, "Upload-Defer-Length": "1"}
    )
    assert created.status_code == 201, created.text
    url = created.headers["Location"]

    def patch(offset: int, body: bytes) -> httpx.Response:
        headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_TYPE}
        return http.patch(url, content=body, headers=headers)

    refused(patch(0, data), 1000, 0)
    assert http.get(url).json()["offset"] == 0
    staging = Stored.at(server.home, server.env).upload_staging()
    assert staging.staged_size(url.rsplit("/", 1)[1]) == 0  # the refused bytes were not staged
    # What fits is accepted and kept; the byte past the quota is refused, not staged.
    assert patch(0, data[:600]).status_code == 204
    refused(patch(600, data[600:]), 1000, 0)
    assert http.get(url).json()["offset"] == 600
    assert patch(600, data[600:1000]).status_code == 204
    done = http.post(f"{url}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["digest"] == digests_of(data[:1000])[0]
    assert used(http, ns) == 1000
    b3 = digests_of(data)[0]
    assert http.head(f"/v1/blobs/{b3}").status_code == 404
    assert blob_events(http, b3) == []
    set_quota(http, ns, 1500)
    # A deferred length declared later is checked when it is declared, before its bytes.
    created = http.post(
        "/v1/uploads", params={"namespace": ns}, headers={**TUS, "Upload-Defer-Length": "1"}
    )
    url = created.headers["Location"]
    late = http.patch(
        url,
        content=data,
        headers={**TUS, "Upload-Offset": "0", "Upload-Length": "1001", "Content-Type": OFFSET_TYPE},
    )
    refused(late, 1500, 1000)
    assert http.get(url).json()["offset"] == 0
    assert used(http, ns) == 1000


def test_commit_of_blobs_the_namespace_does_not_hold_counts(
    server: InProcessServer, http: httpx.Client
) -> None:
    ns = "q-commit"
    set_quota(http, ns, 500)
    data = os.urandom(600)
    upload_blob_anywhere = http.post("/v1/blobs", content=data)  # an admin's: held by none
    assert upload_blob_anywhere.status_code == 201
    manifest = make_manifest(f"{ns}/app:1", {"a.bin": data, "copy.bin": data})
    refused(put_manifest(http, manifest), 500, 0)
    assert http.get(f"/v1/packages/{ns}/app/1").status_code == 404
    assert used(http, ns) == 0
    set_quota(http, ns, 600)
    assert put_manifest(http, manifest).status_code == 201
    assert used(http, ns) == 600


def test_concurrent_remote_pushes_never_exceed_the_quota(
    live_server: Server, live_http: httpx.Client, tmp_path: Path
) -> None:
    """Eight RemoteStore pushes of 300 new bytes each race for 1000 bytes: three commit."""
    server, http = live_server, live_http  # RemoteStore makes its own HTTP connections
    ns = "q-race"
    set_quota(http, ns, 1000)
    trees = [make_tree(tmp_path / f"t{i}", {"f.bin": os.urandom(300)}) for i in range(8)]
    start = threading.Barrier(len(trees))
    outcomes: dict[int, str] = {}
    peak = [0]
    done = threading.Event()

    def push(i: int) -> None:
        with RemoteStore(server.base_url, state_path=tmp_path / f"state{i}.json") as remote:
            start.wait()
            try:
                remote.push(f"{ns}/app:{i}", [trees[i]])
            except QuotaExceeded:
                outcomes[i] = "refused"
            else:
                outcomes[i] = "committed"

    def watch() -> None:
        with server.client() as client:
            while not done.is_set():
                peak[0] = max(peak[0], used(client, ns))

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(trees))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    watcher.join(30)
    assert len(outcomes) == len(trees), outcomes  # nothing but commits and quota refusals
    committed = [i for i, o in outcomes.items() if o == "committed"]
    assert len(committed) == 3, outcomes
    assert peak[0] <= 1000 and used(http, ns) == 900
    listed = http.get("/v1/packages", params={"namespace": ns}).json()["items"]
    assert sorted(v["reference"] for v in listed) == sorted(f"{ns}/app:{i}" for i in committed)


def test_concurrent_session_completions_never_exceed_the_quota(
    server: InProcessServer, http: httpx.Client
) -> None:
    """Eight sessions, opened while all of them fit, complete at once: three fit."""
    ns = "q-race-sessions"
    set_quota(http, ns, 1000)
    urls = []
    for _ in range(8):
        created = http.post(
            "/v1/uploads", params={"namespace": ns}, headers={**TUS, "Upload-Length": "300"}
        )
        assert created.status_code == 201, created.text
        urls.append(created.headers["Location"])
    start = threading.Barrier(len(urls))
    statuses: dict[int, int] = {}

    def complete(i: int) -> None:
        with server.client() as client:
            start.wait()
            response = client.patch(  # the last bytes complete the session
                urls[i],
                content=os.urandom(300),
                headers={**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_TYPE},
            )
            if response.status_code == 413:
                assert_problem(response, 413, "quota_exceeded")
            statuses[i] = response.status_code

    threads = [threading.Thread(target=complete, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(statuses.values()) == [204] * 3 + [413] * 5, statuses
    assert used(http, ns) == 900


# --- reading the settings and the gauges ---------------------------------------------------------


def test_settings_and_metrics_show_quota_and_usage(http: httpx.Client) -> None:
    ns, other = "q-metrics", "q-unlimited"
    set_quota(http, ns, 5000, movable_tags=["latest"])
    upload_blob(http, os.urandom(1234), ns)
    upload_blob(http, os.urandom(99), other)
    assert http.get(f"/v1/namespaces/{ns}").json() == {
        "anonymous_read": False,
        "quota_bytes": 5000,
        "movable_tags": ["latest"],
        "trusted_keys": [],
        "require_signature": False,
        "used_bytes": 1234,
    }
    assert http.get(f"/v1/namespaces/{other}").json()["quota_bytes"] is None
    text = http.get("/metrics").text
    lines = set(text.splitlines())
    assert "# TYPE artifactstore_namespace_used_bytes gauge" in lines
    assert "# TYPE artifactstore_namespace_quota_bytes gauge" in lines
    assert f'artifactstore_namespace_used_bytes{{namespace="{ns}"}} 1234' in lines
    assert f'artifactstore_namespace_quota_bytes{{namespace="{ns}"}} 5000' in lines
    assert f'artifactstore_namespace_used_bytes{{namespace="{other}"}} 99' in lines
    assert not any(
        x.startswith(f'artifactstore_namespace_quota_bytes{{namespace="{other}"') for x in lines
    )
    # The store-wide gauges print whole numbers exactly, not rounded to six digits.
    blob_bytes = [x for x in lines if x.startswith("artifactstore_blob_bytes ")]
    assert len(blob_bytes) == 1 and blob_bytes[0].split()[1].isdigit()


BAD_SETTINGS: list[bytes] = [
    b'{"quota_bytes": -1}',
    b'{"quota_bytes": "10"}',
    b'{"quota_bytes": true}',
    b'{"quota_bytes": 1.5}',
    b'{"quota_bytes": 1e3}',
    b'{"quota_bytes": 9223372036854775808}',
    b'{"quota_bytes": 1000000000000000000000000000000}',
    b'{"quota": 1000}',
    b'{"movable_tags": ["bad tag"]}',
    b'{"movable_tags": [".hidden"]}',
    b'{"movable_tags": "latest"}',
    b'{"movable_tags": [1]}',
    json.dumps({"movable_tags": [f"t{i}" for i in range(65)]}).encode(),
    b'{"anonymous_read": "yes"}',
    b'{"anonymous_read": null}',
    b"[]",
    b'{"quota_bytes": 1',
]


@pytest.mark.parametrize("body", BAD_SETTINGS, ids=[b.decode()[:40] for b in BAD_SETTINGS])
def test_bad_settings_are_refused(http: httpx.Client, body: bytes) -> None:
    ns = "q-strict"
    before = set_quota(http, ns, 777, movable_tags=["latest"])
    response = http.put(
        f"/v1/namespaces/{ns}", content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422)
    assert http.get(f"/v1/namespaces/{ns}").json() == before


def test_a_settings_document_round_trips(http: httpx.Client) -> None:
    ns = "q-roundtrip"
    body = set_quota(http, ns, 2**63 - 1, movable_tags=["stable", "latest", "latest"])
    assert body["movable_tags"] == ["latest", "stable"] and body["used_bytes"] == 0
    again = http.put(f"/v1/namespaces/{ns}", json=body)  # used_bytes is read-only, ignored
    assert again.status_code == 200 and again.json() == body
    cleared = http.put(f"/v1/namespaces/{ns}", json={})
    assert cleared.json() == {
        "anonymous_read": False,
        "quota_bytes": None,
        "movable_tags": [],
        "trusted_keys": [],
        "require_signature": False,
        "used_bytes": 0,
    }


# --- with authentication -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory, store_configs: StoreConfigs
) -> Iterator[AuthServer]:
    root = tmp_path_factory.mktemp("quota-auth")
    srv = _start(root / "home", root / "server.log", store_configs.new().env())
    yield srv
    os.killpg(srv.process.pid, signal.SIGTERM)
    try:
        srv.process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(srv.process.pid, signal.SIGKILL)


def _remote_cli(server: AuthServer, token: str, cwd: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env.update({"ARTIFACTSTORE_URL": server.url, "ARTIFACTSTORE_TOKEN": token})
    env["XDG_CACHE_HOME"] = str(cwd / "cache")
    proc = subprocess.run(
        [str(ARTIFACTSTORE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stderr


def test_only_a_global_admin_changes_a_quota(auth_server: AuthServer, tmp_path: Path) -> None:
    _, ns_admin = _token(auth_server, "ci-admin", ["ci:admin"])
    with _client(auth_server, auth_server.admin) as admin:
        assert admin.put("/v1/namespaces/ci", json={"quota_bytes": 1000}).status_code == 200
    with _client(auth_server, ns_admin) as c:
        raised = c.put("/v1/namespaces/ci", json={"quota_bytes": 10**9})
        assert_problem(raised, 403, "forbidden")
        # The settings are replaced whole: leaving the quota out would remove it.
        assert_problem(c.put("/v1/namespaces/ci", json={"movable_tags": ["x"]}), 403)
        kept = c.put("/v1/namespaces/ci", json={"quota_bytes": 1000, "movable_tags": ["latest"]})
        assert kept.status_code == 200, kept.text
        assert kept.json()["quota_bytes"] == 1000 and kept.json()["movable_tags"] == ["latest"]
    # The CLI reads, modifies and writes: a namespace admin changes the rest, not the quota.
    code, _ = _remote_cli(
        auth_server, ns_admin, tmp_path, "namespace", "set", "ci", "--no-movable-tags"
    )
    assert code == 0
    code, err = _remote_cli(
        auth_server, ns_admin, tmp_path, "namespace", "set", "ci", "--quota", "2GB"
    )
    assert code == 1 and "(forbidden)" in err
    with _client(auth_server, auth_server.admin) as admin:
        body = admin.get("/v1/namespaces/ci").json()
    assert body["quota_bytes"] == 1000 and body["movable_tags"] == []


def test_namespace_gauges_only_for_namespaces_the_caller_reads(auth_server: AuthServer) -> None:
    _, reader = _token(auth_server, "qa-reader", ["qa:read"])
    with _client(auth_server, auth_server.admin) as admin:
        for ns in ("ci", "qa", "public"):
            upload_blob(admin, os.urandom(10), ns)
        assert admin.put("/v1/namespaces/public", json={"anonymous_read": True}).status_code == 200
        everything = admin.get("/metrics").text

    def shown(text: str) -> set[str]:
        prefix = 'artifactstore_namespace_used_bytes{namespace="'
        return {x[len(prefix) :].split('"')[0] for x in text.splitlines() if x.startswith(prefix)}

    assert {"ci", "qa", "public"} <= shown(everything)
    with _client(auth_server, reader) as c:
        assert shown(c.get("/metrics").text) == {"qa"}
    # /metrics needs a token (docs/security.md), even for anonymous-read namespaces.
    with _client(auth_server, None) as anonymous:
        assert_problem(anonymous.get("/metrics"), 401, "unauthenticated")
    with _client(auth_server, "ast_" + "a" * 16 + "_" + "B" * 43) as bad:
        assert_problem(bad.get("/metrics"), 401, "unauthenticated")
