"""``artifactstore log ...`` in local mode, as a user runs it: exit 0 when it verifies,
3 when the log was cut or rewritten behind the registry's back, 1 or 2 for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import delete, select, update

from artifactstore.controlplane.db.tables import chain_head, events
from artifactstore.provenance import keys
from artifactstore.store import Store
from tests.conftest import Cli, make_tree
from tests.controlplane.test_tlog import rewrite_chain_from


def pushed(cli: Cli, count: int, start: int = 0) -> None:
    """``count`` more events (pushes in this process: a CLI run each would be slow)."""
    make_tree(cli.cwd / "dist", {"a.txt": "a\n"})
    with Store.open(cli.home) as store:
        for i in range(start, start + count):
            store.push(f"ci/app:{i}", [cli.cwd / "dist"])


def saved_checkpoints(cli: Cli) -> tuple[Path, Path]:
    pushed(cli, 3)
    old = cli.cwd / "cp-old.txt"
    cli.ok("log", "checkpoint", "--out", old)
    pushed(cli, 3, start=3)
    new = cli.cwd / "cp-new.txt"
    cli.ok("log", "checkpoint", "--out", new)
    return old, new


def test_an_honest_log_verifies(cli: Cli) -> None:
    old, new = saved_checkpoints(cli)
    size = int(old.read_text().split("\n")[1])
    proved = json.loads(cli.ok("log", "prove", "--seq", "2", "--checkpoint", old, "--json").out)
    assert proved["verified"] is True and proved["proof"]["leaf_index"] == 1
    assert proved["proof"]["tree_size"] == size
    entry = json.loads(cli.ok("events", "--json", "--after", "1", "--limit", "1").out)["hash"]
    assert proved["entry"] == entry
    consistent = json.loads(cli.ok("log", "consistency", old, new, "--json").out)
    assert consistent["proof"]["old_size"] == size and consistent["verified"] is True
    audited = json.loads(cli.ok("log", "audit", old, new, "--json").out)
    assert audited["ok"] is True and [c["problem"] for c in audited["checkpoints"]] == [None] * 2
    key = json.loads(cli.ok("log", "key", "--json").out)
    assert key["vkey"].startswith("artifactstore.local/log+")
    printed = cli.ok("log", "checkpoint").out
    assert printed.split("\n")[1] == new.read_text().split("\n")[1]  # nothing appended since


def test_a_rewritten_chain_fails_audit_prove_and_consistency(cli: Cli) -> None:
    old, new = saved_checkpoints(cli)
    with Store.open(cli.home) as store:
        rewrite_chain_from(store, 2)
    cli.ok("events", "--verify-chain")  # recomputed hashes: the chain alone cannot tell
    failed = cli.fails(3, "log", "audit", old, new)
    assert "cp-old.txt" in failed.stderr and "rewritten" in failed.stderr
    cli.fails(3, "log", "prove", "--seq", "2", "--checkpoint", old)
    cli.fails(3, "log", "consistency", old, new)


def test_a_cut_tail_fails_the_audit(cli: Cli) -> None:
    old, new = saved_checkpoints(cli)
    keep = int(old.read_text().split("\n")[1]) + 1
    with Store.open(cli.home) as store, store.db.write() as conn:
        conn.execute(delete(events).where(events.c.seq > keep))
        tip = conn.execute(select(events.c.hash).where(events.c.seq == keep)).scalar_one()
        conn.execute(update(chain_head).values(seq=keep, hash=tip))
    cli.ok("events", "--verify-chain")
    failed = cli.fails(3, "log", "audit", old, new)
    assert "cp-new.txt" in failed.stderr and "cut off" in failed.stderr
    assert "cp-old.txt (size" in failed.stderr and ": ok" in failed.stderr
    cli.fails(3, "log", "prove", "--seq", "1", "--checkpoint", new)


def test_an_edited_event_fails_verify_chain_and_audit(cli: Cli) -> None:
    old, _ = saved_checkpoints(cli)
    with Store.open(cli.home) as store, store.db.write() as conn:
        conn.execute(update(events).where(events.c.seq == 2).values(actor="mallory"))
    cli.fails(3, "events", "--verify-chain")
    assert "chain_broken" in cli.fails(3, "log", "audit", old).stderr


def test_altered_and_malformed_checkpoints(cli: Cli) -> None:
    old, new = saved_checkpoints(cli)
    lines = old.read_text().split("\n")
    forged = cli.cwd / "forged.txt"
    forged.write_text("\n".join([lines[0], str(int(lines[1]) + 1), *lines[2:]]))
    assert "altered" in cli.fails(3, "log", "prove", "--seq", "1", "--checkpoint", forged).stderr
    garbage = cli.cwd / "garbage.txt"
    garbage.write_text("not a checkpoint\n")
    assert (
        "invalid_checkpoint"
        in cli.fails(1, "log", "prove", "--seq", "1", "--checkpoint", garbage).stderr
    )
    failed = cli.fails(3, "log", "audit", new, garbage, forged)
    assert "garbage.txt" in failed.stderr and "forged.txt" in failed.stderr
    cli.fails(3, "log", "consistency", new, old)  # the newer signs fewer entries
    cli.fails(2, "log", "prove", "--seq", "0", "--checkpoint", old)
    cli.fails(2, "log", "prove", "--seq", "x", "--checkpoint", old)
    cli.fails(1, "log", "prove", "--seq", "999", "--checkpoint", old)  # past its size
    cli.fails(2, "log", "audit")
    cli.fails(2, "log", "audit", cli.cwd / "absent.txt")


def test_key_rotation_and_key_files(cli: Cli) -> None:
    old, _ = saved_checkpoints(cli)
    old_pub = cli.home / "log-signing.pub"
    new_key, new_pub = keys.write_key_pair(keys.generate(), cli.cwd / "new.key")
    cli.env["ARTIFACTSTORE_LOG_SIGNING_KEY"] = str(new_key)
    pushed(cli, 1, start=10)
    rotated = cli.cwd / "cp-rotated.txt"
    cli.ok("log", "checkpoint", "--out", rotated)
    # the store's key is now the new one: the old checkpoint needs the old public key
    assert "no signature by the key" in cli.fails(3, "log", "audit", old, rotated).stderr
    cli.ok("log", "audit", old, rotated, "--key", old_pub, "--key", new_pub)
    vkey = json.loads(cli.ok("log", "key", "--json").out)["vkey"]
    cli.ok("log", "audit", rotated, "--key", vkey)
    cli.ok("log", "consistency", old, rotated, "--key", old_pub, "--key", vkey)
    os.chmod(new_key, 0o644)
    refused = cli.fails(1, "log", "checkpoint")
    assert "invalid_key" in refused.stderr and "chmod 600" in refused.stderr
