"""Which store a command uses when the shell still has ``ARTIFACTSTORE_URL`` set.

A user who exported the URL for the server and then works on a local data
directory must not be sent to the server without knowing: ``--home`` on the
command line means local mode, ``--home`` with ``--server`` is a usage error,
and a remote store chosen by the variable alone is named on a terminal.
"""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from tests.conftest import ARTIFACTSTORE, Cli
from tests.server.conftest import free_port


def _closed_port_url() -> str:
    """A loopback URL nothing listens on: a remote command there fails at once."""
    return f"http://127.0.0.1:{free_port()}"


def test_home_on_the_command_line_beats_the_url_variable(cli: Cli, tmp_path: Path) -> None:
    cli.env["ARTIFACTSTORE_URL"] = _closed_port_url()
    (cli.cwd / "a.txt").write_text("local\n")
    home = tmp_path / "explicit-home"
    cli.ok("--home", home, "push", "ci/app:1", "a.txt")
    assert "ci/app:1" in cli.ok("--home", home, "ls").out
    cli.fails(1, "ls")  # without --home the variable still means remote: refused there


def test_home_and_server_together_are_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    result = cli.fails(2, "--home", tmp_path, "--server", _closed_port_url(), "ls")
    assert "not both" in result.stderr


def _stderr_on_a_terminal(cli: Cli, *args: str) -> str:
    """Run the CLI with stderr on a pseudo-terminal; what it wrote there."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [str(ARTIFACTSTORE), *args],
            cwd=cli.cwd,
            env=cli.env,
            stdout=subprocess.DEVNULL,
            stderr=follower,
            timeout=120,
            check=False,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode != 0  # nothing listens at the URL
    return b"".join(chunks).decode(errors="replace")


def test_a_store_chosen_by_the_variable_is_named_on_a_terminal(cli: Cli) -> None:
    url = _closed_port_url()
    cli.env["ARTIFACTSTORE_URL"] = url
    assert f"remote store {url} (ARTIFACTSTORE_URL" in _stderr_on_a_terminal(cli, "ls")
    # Pipes and scripts stay quiet; an explicit --server needs no reminder.
    assert "remote store" not in cli("ls").stderr
    del cli.env["ARTIFACTSTORE_URL"]
    assert "remote store" not in _stderr_on_a_terminal(cli, "--server", url, "ls")
