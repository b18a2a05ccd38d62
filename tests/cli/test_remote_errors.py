"""Every way a server can fail a remote command, through the real CLI: one clear line.

A small real HTTP server on loopback answers each problem code in turn (the
codes come from the error tree and from docs/errors.md, so a new code cannot
be forgotten), and the ``artifactstore`` executable runs ``push``, ``pull``,
``ls``, ``show``, ``cat`` and ``rm`` against it. So do a refused connection,
a server that never answers, TLS failures and a proxy's HTML 502. Each must
give exactly one line on stderr, naming the cause (and the setting to check),
with the exit code docs/errors.md documents, and never a traceback.
"""

from __future__ import annotations

import inspect
import json
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import pytest

from artifactstore import errors
from artifactstore.server.problems import problem_body, status_for
from tests.cli.remote import run_remote
from tests.conftest import CliResult

DOCS = Path(__file__).resolve().parents[2] / "docs"


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class CannedServer(ThreadingHTTPServer):
    """Answers every request with :attr:`answer`; ``HEAD /v1/blobs/...`` with a bare 404
    (the blob is absent) so that a push goes on to upload and meets the answer there."""

    daemon_threads = True
    answer = Answer(200, {}, b"")


class Handler(BaseHTTPRequestHandler):
    server: CannedServer

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # the whole body first: the client sees the answer
        answer = self.server.answer
        if self.command == "HEAD" and self.path.startswith("/v1/blobs/"):
            answer = Answer(404, {}, b"")
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _reply

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test asserts on the client's output."""


def _serve(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def canned() -> Iterator[tuple[CannedServer, str]]:
    server = CannedServer(("127.0.0.1", 0), Handler)
    for address in _serve(server):
        yield server, f"http://{address}"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("remote-errors")
    (root / "dist").mkdir()
    (root / "dist" / "file.txt").write_text("content\n")
    return root


#: Each command as a user runs it, with what it needs.
COMMANDS: dict[str, tuple[str, ...]] = {
    "push": ("push", "ns/app:1", "dist"),
    "pull": ("pull", "ns/app:1", "-o", "out"),
    "ls": ("ls", "ns"),
    "show": ("show", "ns/app:1"),
    "cat": ("cat", "ns/app:1", "file.txt"),
    "rm": ("rm", "ns/app:1"),
}


def problem(status: int, code: str, detail: str, **headers: str) -> Answer:
    """A problem document as the server sends it."""
    body = problem_body(status, code, "a title", detail)
    headers["Content-Type"] = "application/problem+json"
    return Answer(status, headers, json.dumps(body).encode())


def one_error_line(result: CliResult, code: str) -> str:
    """The single line a failure prints: ``error: ... (code)``, nothing else, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("error: ") and line.endswith(f"({code})"), line
    return line


def documented_exits() -> dict[str, int]:
    """Each code's exit status as docs/errors.md's table gives it."""
    rows = re.findall(r"^\| `([a-z_]+)` \| .* \| (\d+) \|$", (DOCS / "errors.md").read_text(), re.M)
    return {code: int(exit_code) for code, exit_code in rows}


def http_only_codes() -> dict[str, int]:
    """The HTTP layer's own codes and statuses (docs/errors.md, second table)."""
    text = (DOCS / "errors.md").read_text().split("## HTTP-only problem codes", 1)[1]
    return {
        code: int(status) for code, status in re.findall(r"^\| `([a-z_]+)` \| (\d+) \|", text, re.M)
    }


TREE = sorted(
    (
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.ArtifactStoreError)
    ),
    key=lambda c: c.code,
)
#: (code, HTTP status, exit documented for it): the tree's codes, then the HTTP layer's.
CASES = [(c.code, status_for(c.__new__(c)), documented_exits().get(c.code, -1)) for c in TREE] + [
    (code, status, 1) for code, status in sorted(http_only_codes().items())
]


def test_every_code_has_a_documented_exit() -> None:
    missing = [code for code, _, exit_code in CASES if exit_code < 0]
    assert not missing, f"docs/errors.md gives no exit code for {missing}"
    assert len(http_only_codes()) >= 5, "the HTTP-only table was not found"


@pytest.mark.parametrize(("code", "status", "exit_code"), CASES, ids=[c[0] for c in CASES])
def test_each_problem_code_is_one_line_with_its_exit(
    canned: tuple[CannedServer, str], work: Path, code: str, status: int, exit_code: int
) -> None:
    server, url = canned
    # Every command meets some of the codes: which one is fixed by the code's place.
    name = list(COMMANDS)[[c[0] for c in CASES].index(code) % len(COMMANDS)]
    detail = f"what the server says about {code}"
    server.answer = problem(
        status, code, detail, **({"Retry-After": "17"} if status == 429 else {})
    )
    result = run_remote(work, url, COMMANDS[name])
    line = one_error_line(result, code)
    assert result.code == exit_code, (name, result)
    if code == "unauthenticated":
        assert "ARTIFACTSTORE_TOKEN" in line
    elif code == "too_many_requests":
        assert "retry after 17 s" in line
    else:
        assert detail in line
    assert not (work / "out").exists(), "a failed pull wrote something"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_proxy_page_is_one_line(canned: tuple[CannedServer, str], work: Path, name: str) -> None:
    server, url = canned
    page = b"<html><body><h1>502 Bad Gateway</h1>\n<hr>nginx</body></html>\n"
    server.answer = Answer(502, {"Content-Type": "text/html"}, page)
    line = one_error_line(run_remote(work, url, COMMANDS[name]), "bad_response")
    assert "502" in line and "ARTIFACTSTORE_URL" in line


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "unauthenticated", "ARTIFACTSTORE_TOKEN"),
        (403, "forbidden", "ARTIFACTSTORE_TOKEN"),
        (429, "too_many_requests", "retry after 9 s"),
        (500, "bad_response", "500"),
    ],
)
def test_a_bodiless_answer_to_a_pushs_head_names_its_cause(
    work: Path, status: int, code: str, expected: str
) -> None:
    """A ``HEAD`` answer has no body: its status alone must give the cause (it was
    ``server answered 401: Unauthorized (internal_error)``, and 429 a traceback)."""

    class Bare(CannedServer):
        answer = Answer(status, {"Retry-After": "9"}, b"")

    bare = Bare(("127.0.0.1", 0), type("BareHandler", (Handler,), {"do_HEAD": _bare_head}))
    for address in _serve(bare):
        result = run_remote(
            work, f"http://{address}", COMMANDS["push"], ARTIFACTSTORE_TOKEN="ast_x"
        )
    assert expected in one_error_line(result, code)
    assert result.code == 1


def _bare_head(self: Handler) -> None:
    answer = self.server.answer
    self.send_response(answer.status)
    for name, value in answer.headers.items():
        self.send_header(name, value)
    self.send_header("Content-Length", "0")
    self.end_headers()


def test_a_missing_token_is_named(canned: tuple[CannedServer, str], work: Path) -> None:
    server, url = canned
    server.answer = problem(401, "unauthenticated", "needs a token")
    line = one_error_line(run_remote(work, url, COMMANDS["push"]), "unauthenticated")
    assert "none was given" in line and "ARTIFACTSTORE_TOKEN" in line
    line = one_error_line(
        run_remote(work, url, COMMANDS["ls"], ARTIFACTSTORE_TOKEN="ast_bad"), "unauthenticated"
    )
    assert "refused the token" in line and "needs a token" in line


def test_a_servers_text_stays_on_one_line(canned: tuple[CannedServer, str], work: Path) -> None:
    server, url = canned
    server.answer = problem(409, "conflict", "first\nsecond\x1b[31m red")
    line = one_error_line(run_remote(work, url, COMMANDS["show"]), "conflict")
    assert "first second" in line and "\x1b" not in line


# --- below HTTP -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def silent() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    for conn in held:
        conn.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An https server whose certificate nobody trusts (made by openssl for the test)."""
    root = tmp_path_factory.mktemp("tls")
    key, cert = root / "key.pem", root / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = CannedServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for address in _serve(server):
        yield f"https://{address}"


def _refused() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens


TRANSPORT = ["refused", "timeout", "plain-port", "untrusted"]


@pytest.mark.parametrize("name", list(COMMANDS))
@pytest.mark.parametrize("failure", TRANSPORT)
def test_transport_failures_are_one_line(
    request: pytest.FixtureRequest,
    canned: tuple[CannedServer, str],
    work: Path,
    failure: str,
    name: str,
) -> None:
    plain = canned[1]
    url, code, words = {
        "refused": (_refused(), "server_unreachable", "connection refused"),
        "timeout": ("", "server_timeout", "sent nothing for 1 s"),
        "plain-port": (plain.replace("http://", "https://"), "tls_failure", "https"),
        "untrusted": ("", "tls_failure", "certificate"),
    }[failure]
    if failure == "timeout":
        url = request.getfixturevalue("silent")
    if failure == "untrusted":
        url = request.getfixturevalue("self_signed")
    result = run_remote(work, url, COMMANDS[name], ARTIFACTSTORE_TIMEOUT="1")
    line = one_error_line(result, code)
    assert words in line and "ARTIFACTSTORE_" in line, line
    assert result.code == 1
