"""Docs are tested: a command, setting, error code or event type missing from the docs fails."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from artifactstore import errors
from artifactstore.cli.main import cli
from artifactstore.config import Settings
from artifactstore.model import events
from artifactstore.model.events import EVENT_CLASSES
from tests.conftest import ARTIFACTSTORE
from tests.model.test_events import SAMPLES
from tests.server.conftest import free_port

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command by its full name. The top-level group is lazy (its ``.commands``
    is empty): ask it through ``get_command``, as click does."""
    ctx = click.Context(group)
    found: dict[str, click.Command] = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        found[prefix + name] = command
        if isinstance(command, click.Group):
            found.update(_commands(command, prefix + name + " "))
    return found


def test_every_command_and_option_is_documented() -> None:
    text = _text("cli.md")
    commands = _commands(cli)
    assert {"push", "pull", "token create"} <= set(commands)
    for name in commands:
        assert f"`{name}" in text, f"command {name!r} is missing from docs/cli.md"
    for name, command in commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                longest = max(param.opts, key=len)
                assert longest in text, f"{name} {longest} is missing from docs/cli.md"


def test_every_setting_is_documented() -> None:
    text = _text("configuration.md")
    for field in dataclasses.fields(Settings):
        assert f"`{field.name}`" in text, f"setting {field.name} missing"
        assert f"`ARTIFACTSTORE_{field.name.upper()}`" in text


def test_every_error_code_is_documented() -> None:
    text = _text("errors.md")
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)]
    codes = {c.code for c in classes if issubclass(c, errors.ArtifactStoreError)}
    for code in codes:
        assert f"`{code}`" in text, f"error code {code} is missing from docs/errors.md"


def test_every_event_type_is_documented() -> None:
    """Each event class has its row in docs/events.md, naming every key of its payload."""
    rows = {
        m.group(1): line
        for line in _text("events.md").splitlines()
        if (m := re.match(r"\| `([a-z_]+\.[a-z_]+)` \|", line))
    }
    declared = {  # every event class in model/events.py, listed in the table or not
        kind: c.__name__
        for _, c in inspect.getmembers(events, inspect.isclass)
        if dataclasses.is_dataclass(c) and isinstance(kind := getattr(c, "type", None), str)
    }
    for kind, name in declared.items():
        assert kind in rows, f"event type {kind} is missing from docs/events.md"
        assert kind in EVENT_CLASSES, f"{name} is missing from EVENT_CLASSES"
    for kind, row in rows.items():
        assert kind in EVENT_CLASSES, f"docs/events.md documents {kind}, which no class is"
        for key in SAMPLES[kind].to_payload():
            assert f"`{key}`" in row, f"payload key {key} of {kind} is missing from its row"


def test_docs_stand_on_their_own() -> None:
    """README, docs/ and every command's help point only at what the repository holds."""
    texts = {
        p.name: p.read_text(encoding="utf-8")
        for p in [DOCS.parent / "README.md", *DOCS.glob("*.md")]
    }
    runner = CliRunner()
    for name in _commands(cli):
        texts[f"{name} --help"] = runner.invoke(cli, [*name.split(), "--help"]).output
    for where, text in texts.items():
        for outside in ("SPEC", "shared/", "PERF-NOTES"):
            assert outside not in text, (
                f"{where} points at {outside}, which is not in the repository"
            )


def test_readme_quick_start() -> None:
    text = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    assert "make serve" in text and "make test" in text


def _readme_blocks() -> list[tuple[str, str]]:
    """Every fenced block of the README: (language, text), in order."""
    text = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def test_make_serve_takes_port_and_host() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    plan = subprocess.run(
        ["make", "-n", "serve", "PORT=8123", "HOST=127.0.0.2"],
        cwd=DOCS.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "artifactstore serve --host 127.0.0.2 --port 8123" in plan


def _start_server(
    home: Path, port: int, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """What ``make serve PORT=port`` runs, on ``home``; the process and the admin token."""
    log = home.parent / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(ARTIFACTSTORE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=home.parent,
            env={**env, "ARTIFACTSTORE_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        token = re.search(r"ARTIFACTSTORE_TOKEN=(ast_\S+)", log.read_text(errors="replace"))
        with contextlib.suppress(httpx.TransportError):
            if token and httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).is_success:
                return proc, token.group(1)
        assert proc.poll() is None, log.read_text(errors="replace")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server not ready:\n{log.read_text(errors='replace')}")


def test_readme_walk_through(tmp_path: Path) -> None:
    """Every shell and Python block of the README, run as written by a new user.

    Only what the reader fills in is substituted: the clone's directory, the
    port and the token ``make serve`` printed. The blocks run in one shell, in
    order, with ``set -e``; the Python block is saved as ``try.py`` and run with
    the venv's ``python``, as the README says.
    """
    blocks = _readme_blocks()
    shell = [body for lang, body in blocks if lang == "" and not body.startswith("make ")]
    python = [body for lang, body in blocks if lang == "python"]
    assert len(shell) == 3 and len(python) == 1, "the walk below knows three shell blocks"
    activate = Path(sys.executable).parent / "activate"
    if shutil.which("curl") is None or not activate.exists():
        pytest.skip("needs curl and a virtual environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env.update(HOME=str(tmp_path), TMPDIR=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    (tmp_path / "server").mkdir()
    port = free_port()
    proc, token = _start_server(tmp_path / "server" / "artifactstore-data", port, env)
    try:
        setup, remote, local = shell
        setup = setup.replace("cd artifact-store ", f"cd {DOCS.parent} ")
        setup = setup.replace(". .venv/bin/activate", f". {activate}")
        remote = remote.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
        remote = remote.replace("ARTIFACTSTORE_TOKEN=ast_...", f"ARTIFACTSTORE_TOKEN={token}")
        script = "\n".join(
            [
                "set -eu -o pipefail",
                setup,
                'pwd > "$HOME/walk-dir"',
                remote,
                local,
                f"cat > try.py <<'PYTHON'\n{python[0]}PYTHON",
                "python try.py",
            ]
        )
        run = subprocess.run(
            ["bash", "-x", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        openapi = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=30).text
    finally:
        proc.terminate()
        proc.wait(30)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    work = Path((tmp_path / "walk-dir").read_text().strip())  # the setup's mktemp -d
    page = (work / "dist/report/index.html").read_bytes()
    assert page[100:200] in run.stdout.encode()  # the curl range request
    assert '"sha256":"sha256:' in run.stdout  # the one-shot upload answered both digests
    assert (work / "out/report/index.html").read_bytes() == page
    assert (work / "out-lib/report/index.html").read_bytes() == page
    assert "ci/lib:1.0 blake3:" in run.stdout
    assert "SPEC" not in openapi  # the API's description stands on its own too
