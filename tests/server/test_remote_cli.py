"""The CLI in remote mode (``ARTIFACTSTORE_URL``) against a real server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from artifactstore.client.uploads import SESSION_THRESHOLD
from tests.conftest import ARTIFACTSTORE, REAL_CACHE, Cli, CliResult, make_tree, read_tree
from tests.server.conftest import Server, digests_of

MiB = 1024 * 1024


class RemoteCli:
    """``artifactstore`` with ARTIFACTSTORE_URL set, its own cache dir and working dir."""

    def __init__(self, server: Server, root: Path) -> None:
        self.cwd = root / "work"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.cache = root / "cache"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
        self.env.update({"ARTIFACTSTORE_URL": server.base_url, "XDG_CACHE_HOME": str(self.cache)})

    @property
    def state_file(self) -> Path:
        return self.cache / "artifactstore" / "upload-sessions.json"

    def sessions(self) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def argv(self, *args: str | Path) -> list[str]:
        return [str(ARTIFACTSTORE), *map(str, args)]

    def __call__(self, *args: str | Path) -> CliResult:
        proc = subprocess.run(
            self.argv(*args),
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        result = CliResult(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def ok(self, *args: str | Path) -> CliResult:
        result = self(*args)
        assert result.code == 0, (args, result)
        return result

    def json(self, *args: str | Path) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"ARTIFACTSTORE_GC_GRACE": "0"}


@pytest.fixture(scope="module")
def server(live_server: Server) -> Server:
    """A real process: the CLI runs as a subprocess and talks to it over HTTP."""
    return live_server


@pytest.fixture(scope="module")
def cli(server: Server, tmp_path_factory: pytest.TempPathFactory) -> RemoteCli:
    return RemoteCli(server, tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    big = os.urandom(SESSION_THRESHOLD + MiB + 7)  # goes through an upload session
    return make_tree(
        tmp_path_factory.mktemp("tree") / "dist",
        {
            "app.bin": big,
            "README.md": "# remote\n",
            "lib/a.py": "print('a')\n",
            "lib/b.py": "print('b')\n",
            "lib/copy-of-a.py": "print('a')\n",  # same bytes: one blob
            "empty.txt": b"",
            "docs": None,
        },
    )


@pytest.fixture(scope="module")
def pushed(cli: RemoteCli, tree: Path) -> dict[str, Any]:
    result: dict[str, Any] = cli.json("push", "remote/app:1.0", tree, "--meta", "branch=main")
    return result


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def test_a_push_in_the_tests_leaves_the_real_home_alone(
    server: Server, private_home: Path, tmp_path: Path
) -> None:
    """A CLI push started the plain way (no cache directory of its own) keeps its
    upload sessions in the suite's private home, never in the user's."""
    real = REAL_CACHE / "artifactstore" / "upload-sessions.json"
    before = _stat(real)
    cli = Cli(tmp_path / "unused-home", tmp_path)
    cli.env.pop("ARTIFACTSTORE_HOME")
    cli.env["ARTIFACTSTORE_URL"] = server.base_url
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(SESSION_THRESHOLD + 1))  # goes through a resumable session
    cli.ok("push", "remote/home:1", big)
    assert (private_home / ".cache" / "artifactstore" / "upload-sessions.json").is_file()
    assert _stat(real) == before


def test_push_uploads_each_blob_once(pushed: dict[str, Any], tree: Path) -> None:
    files = read_tree(tree)
    assert pushed["created"] is True
    assert pushed["reference"] == "remote/app:1.0"
    assert pushed["file_count"] == len(files)
    assert pushed["size"] == sum(len(v) for v in files.values())
    assert pushed["blobs_stored"] == len(set(files.values()))
    assert pushed["metadata"] == {"branch": "main"}


def test_second_push_uploads_nothing(cli: RemoteCli, pushed: dict[str, Any], tree: Path) -> None:
    again = cli.json("push", "remote/app:1.0", tree, "--meta", "branch=main")
    assert again["created"] is False and again["blobs_stored"] == 0
    assert again["digest"] == pushed["digest"]
    other = cli.json("push", "remote/app:1.1", tree, "--meta", "branch=dev")
    assert other["created"] is True and other["blobs_stored"] == 0
    text = cli.ok("push", "remote/app:1.1", tree, "--meta", "branch=dev").out
    assert "unchanged" in text and "0 new blobs" in text


def test_ls_show(cli: RemoteCli, pushed: dict[str, Any], tree: Path) -> None:
    cli.ok("push", "remote/app:1.1", tree, "--meta", "branch=dev")
    listed = cli.json("ls", "remote")
    refs = [r["reference"] for r in listed]
    assert refs[:2] == ["remote/app:1.1", "remote/app:1.0"]  # newest first
    assert [r["reference"] for r in cli.json("ls", "remote/app", "--where", "branch=main")] == [
        "remote/app:1.0"
    ]
    assert "remote/app:1.0" in cli.ok("ls", "remote").out
    shown = cli.json("show", "remote/app:1.0")
    assert shown["digest"] == pushed["digest"]
    paths = {f["path"]: f for f in shown["manifest"]["files"]}
    assert set(paths) == set(read_tree(tree))
    for path, data in read_tree(tree).items():
        assert paths[path]["digests"]["blake3"] == digests_of(data)[0]
    text = cli.ok("show", "remote/app:1.0").out
    assert pushed["digest"] in text and "branch=main" in text


def test_pull_cat_verify(
    cli: RemoteCli, pushed: dict[str, Any], tree: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cli.ok("pull", "remote/app:1.0", "-o", out)
    assert read_tree(out) == read_tree(tree)
    (out / "lib" / "a.py").write_text("changed here\n")  # a pull never overwrites unasked
    again = cli("pull", "remote/app:1.0", "-o", out)
    assert again.code == 1 and "--force" in again.stderr
    assert (out / "lib" / "a.py").read_text() == "changed here\n"
    cli.ok("pull", "remote/app:1.0", "-o", out, "--force")
    assert read_tree(out) == read_tree(tree)
    assert cli.ok("cat", "remote/app:1.0", "lib/b.py").stdout == b"print('b')\n"
    assert cli.ok("cat", "remote/app:1.0", "app.bin").stdout == (tree / "app.bin").read_bytes()
    result = cli("cat", "remote/app:1.0", "nope.txt")
    assert result.code == 1 and result.stderr.strip()
    verified = cli.ok("verify", "remote/app:1.0")
    assert "ok" in verified.stderr
    report = cli.json("verify", "remote/app:1.0")
    assert report["damaged"] == [] and report["blobs_checked"] == len(read_tree(tree))


def test_events(cli: RemoteCli, pushed: dict[str, Any]) -> None:
    result = cli.ok("events", "--verify-chain")
    assert "verified" in result.stderr
    lines = [json.loads(line) for line in cli.ok("events", "--json").out.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert any(e["type"] == "package.committed" for e in lines)
    after = cli.ok("events", "--after", str(len(lines) - 1), "--json").out.splitlines()
    assert len(after) == 1


def test_schema_commands(cli: RemoteCli, tree: Path, tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"build": {"type": "integer"}},
        "required": ["build"],
    }
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    assert "registered" in cli.ok("schema", "register", "remote.build", path).stderr
    assert "unchanged" in cli.ok("schema", "register", "remote.build", path).stderr
    assert json.loads(cli.ok("schema", "show", "remote.build").stdout) == schema
    assert "remote.build" in [s["id"] for s in cli.json("schema", "list")]
    assert "remote.build" in cli.ok("schema", "list").out
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"type": "array"}))
    assert cli("schema", "register", "remote.build", other).code == 1
    bad = cli("push", "remote/typed:1", tree, "--variant", "remote.build", "--meta", "build=x")
    assert bad.code == 1 and "build" in bad.stderr
    ok = cli.json(
        "push", "remote/typed:1", tree, "--variant", "remote.build", "--meta-file", _meta(tmp_path)
    )
    assert ok["created"] is True and ok["variant"] == "remote.build"


def _meta(tmp_path: Path) -> Path:
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({"build": 42}))
    return path


def test_rm_and_gc(cli: RemoteCli, server: Server, tmp_path: Path) -> None:
    only = make_tree(tmp_path / "only", {"unique.bin": os.urandom(4096)})
    pushed = cli.json("push", "remote/gone:1", only)
    assert pushed["blobs_stored"] == 1
    digest = digests_of((only / "unique.bin").read_bytes())[0]
    assert "deleted" in cli.ok("rm", "remote/gone:1").stderr
    assert cli("show", "remote/gone:1").code == 1
    assert cli("rm", "remote/gone:1").code == 1
    dry = cli.json("gc", "--dry-run")
    assert dry["dry_run"] is True and digest in dry["collected"]
    assert httpx.head(f"{server.base_url}/v1/blobs/{digest}").status_code == 200
    assert "would collect" in cli.ok("gc", "--dry-run").stderr
    real = cli.json("gc")
    assert digest in real["collected"]
    assert httpx.head(f"{server.base_url}/v1/blobs/{digest}").status_code == 404
    assert cli("gc", "--grace", "1h").code == 1  # the server's setting, said clearly


@pytest.mark.parametrize(
    "args",
    [("rebuild",), ("migrate",), ("verify", "--all")],
    ids=["rebuild", "migrate", "verify-all"],
)
def test_host_only_commands_refuse_remote_mode(cli: RemoteCli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code != 0
    assert "server host" in result.stderr, result.stderr


def test_usage_errors(cli: RemoteCli, tree: Path) -> None:
    assert cli("push", "not a ref", tree).code == 2
    assert cli("show", "remote/app").code in (1, 2)


def staged_size(server: Server, upload_id: str) -> int:
    for path in server.home.rglob(upload_id):
        if path.is_file():
            return path.stat().st_size
    return 0


def test_interrupted_push_resumes(cli: RemoteCli, server: Server, tmp_path: Path) -> None:
    size = 64 * MiB
    data = os.urandom(size)
    src = make_tree(tmp_path / "big", {"big.bin": data, "small.txt": "small\n"})
    b3, _ = digests_of(data)
    cli.state_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        cli.argv("push", "remote/big:1", src),
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            sessions = cli.sessions()
            if url is None and sessions:
                (url,) = sessions.values()
            if url is not None and staged_size(server, url.rsplit("/", 1)[1]) >= 4 * MiB:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the push finished before it could be interrupted"
        assert url is not None, "no upload session was recorded"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    # The server notices the cut connection and keeps what arrived.
    offset = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = httpx.get(url).json()
        offset = status["offset"]
        if offset > 0:
            break
        time.sleep(0.1)
    assert status["state"] == "open"
    assert 0 < offset < size, offset
    upload_id = url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 10  # the cut PATCH is counted (and logged) when it ends
    while time.monotonic() < deadline and not any(
        line.get("method") == "PATCH" and str(line.get("path")).endswith(upload_id)
        for line in server.access_log()
    ):
        time.sleep(0.05)
    assert cli.sessions() == {f"{server.base_url} {b3}": url}  # remembered for the rerun

    before = _received(server)
    rerun = cli.json("push", "remote/big:1", src)
    assert rerun["created"] is True
    done = httpx.get(url).json()  # the rerun finished the same session, not a new one
    assert done["state"] == "completed" and done["digest"] == b3
    assert _received(server) - before < size - offset + 8 * MiB  # only the rest was sent
    assert cli.sessions() == {}
    assert cli.ok("cat", "remote/big:1", "big.bin").stdout == data


def _received(server: Server) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    for line in text.splitlines():
        if line.startswith("artifactstore_http_received_bytes_total "):
            return float(line.split()[1])
    raise AssertionError("no received-bytes counter")
