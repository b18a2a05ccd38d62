"""log checkpoint / key / prove / consistency / audit: the transparency log (SPEC 8).

Every proof the store hands out is verified here with the offline verifier
(``artifactstore.provenance``) against checkpoints whose signatures are
checked first, so a command exits 0 only for what verified, and 3
(integrity) for a bad signature, a proof that fails or a log that does not
extend a checkpoint. The keys: ``--key`` (a PEM public key file, or a C2SP
verifier key ``name+hash+base64``), repeatable for rotated keys; by default
the store's own log key, which checks the store against itself only.
"""

from __future__ import annotations

from pathlib import Path

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.exit_codes import INTEGRITY
from artifactstore.cli.output import emit_json, note
from artifactstore.errors import (
    IntegrityError,
    InvalidCheckpoint,
    InvalidInput,
    LogInconsistent,
    ProofInvalid,
)
from artifactstore.model.api import StoreAPI
from artifactstore.model.tlog import AuditFinding, Checkpoint, ConsistencyProof, b64
from artifactstore.provenance.checkpoint import parse_checkpoint, parse_vkey, verify_checkpoint
from artifactstore.provenance.keys import PublicKey, load_public_key, public_key_from_pem
from artifactstore.provenance.logproofs import verify_consistency, verify_inclusion

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)

Key = PublicKey | tuple[str, PublicKey]

_KEY_HELP = (
    "Public key to check checkpoint signatures with: a PEM file or a C2SP verifier key "
    "(name+hash+base64); repeat for rotated keys (default: the store's log key)."
)


def _keys(store: StoreAPI, given: tuple[str, ...]) -> list[Key]:
    if not given:
        pem = store.log_key().pem
        return [public_key_from_pem(pem.encode(), "the store's log key")]
    out: list[Key] = []
    for item in given:
        out.append(
            parse_vkey(item)
            if "+" in item and not Path(item).exists()
            else load_public_key(Path(item))
        )
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidCheckpoint(f"cannot read checkpoint {path}: {exc}") from exc


def _checkpoint(path: Path, keys: list[Key]) -> Checkpoint:
    """The checkpoint in ``path`` once its signature verified (else the error names it)."""
    note_text = _read(path)
    try:
        return verify_checkpoint(note_text, keys)
    except (InvalidCheckpoint, IntegrityError) as exc:
        exc.detail = f"{path}: {exc.detail}"
        raise


def _current_size(store: StoreAPI) -> int:
    checkpoint, _ = parse_checkpoint(store.log_checkpoint())
    return checkpoint.size


def _within_log(store: StoreAPI, cp: Checkpoint, path: Path) -> None:
    size = _current_size(store)
    if cp.size > size:
        raise LogInconsistent(
            f"{path}: the log holds {size} events, fewer than the {cp.size} this checkpoint "
            "signs: events were cut off its end"
        )


@click.group(name="log")
def log_group() -> None:
    """The transparency log: signed checkpoints, inclusion and consistency proofs, audit."""


@log_group.command(name="checkpoint")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write it to FILE.")
@pass_ctx
def checkpoint(ctx: CliContext, out: Path | None) -> None:
    """A signed checkpoint of the event log (a C2SP signed note)."""
    note_text = ctx.store(create=False).log_checkpoint()
    if out is None:
        click.echo(note_text, nl=False)
        return
    out.write_text(note_text, encoding="utf-8")
    cp, _ = parse_checkpoint(note_text)
    note(f"checkpoint of {cp.size} events written to {out}")


@log_group.command(name="key")
@click.option("--json", "as_json", is_flag=True, help="Print name, PEM and verifier key as JSON.")
@pass_ctx
def key(ctx: CliContext, as_json: bool) -> None:
    """The log's public key (PEM), which auditors keep to check checkpoints."""
    log_key = ctx.store(create=False).log_key()
    if as_json:
        emit_json(log_key.to_json())
        return
    click.echo(log_key.pem, nl=False)
    note(f"verifier key: {log_key.vkey}")


@log_group.command(name="prove")
@click.option("--seq", type=click.IntRange(min=1), required=True, help="The event's seq.")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="A saved checkpoint whose tree must hold the event.",
)
@click.option("--key", "key_args", multiple=True, help=_KEY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the proof and verdict as JSON.")
@pass_ctx
def prove(
    ctx: CliContext, seq: int, checkpoint_file: Path, key_args: tuple[str, ...], as_json: bool
) -> None:
    """Prove event SEQ is in a checkpoint's tree and verify it: exit 0, or 3."""
    store = ctx.store(create=False)
    cp = _checkpoint(checkpoint_file, _keys(store, key_args))
    if seq > cp.size:
        raise InvalidInput(f"event {seq} is past the {cp.size} events this checkpoint signs")
    _within_log(store, cp, checkpoint_file)
    found = store.events(seq - 1, 1)
    if not found or found[0].seq != seq:
        raise LogInconsistent(f"event {seq} is no longer in the log: it was removed")
    entry = found[0].hash
    proof = store.log_inclusion(seq, cp.size)
    verify_inclusion(entry, proof, cp)
    if as_json:
        emit_json(
            {
                "seq": seq,
                "entry": entry,
                "checkpoint": cp.to_json(),
                "proof": proof.to_json(),
                "verified": True,
            }
        )
        return
    note(f"event {seq} ({entry}) is in the tree of {cp.size} events, root {b64(cp.root)}: verified")


@log_group.command(name="consistency")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_args", multiple=True, help=_KEY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the proof and verdict as JSON.")
@pass_ctx
def consistency(
    ctx: CliContext, old: Path, new: Path, key_args: tuple[str, ...], as_json: bool
) -> None:
    """Prove the log of checkpoint NEW extends that of OLD, and verify it: exit 0, or 3."""
    store = ctx.store(create=False)
    held = _keys(store, key_args)
    old_cp, new_cp = _checkpoint(old, held), _checkpoint(new, held)
    if old_cp.size > new_cp.size:
        raise ProofInvalid(
            f"{new} signs {new_cp.size} events, fewer than the {old_cp.size} of {old}: "
            "events were removed between them"
        )
    _within_log(store, new_cp, new)
    proof = (
        store.log_consistency(old_cp.size, new_cp.size)
        if old_cp.size
        else ConsistencyProof(0, new_cp.size, ())
    )
    verify_consistency(old_cp, new_cp, proof)
    if as_json:
        emit_json(
            {
                "old": old_cp.to_json(),
                "new": new_cp.to_json(),
                "proof": proof.to_json(),
                "verified": True,
            }
        )
        return
    note(f"the tree of {new_cp.size} events extends the tree of {old_cp.size}: verified")


@log_group.command(name="audit")
@click.argument(
    "checkpoints",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--key", "key_args", multiple=True, help=_KEY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def audit(
    ctx: CliContext, checkpoints: tuple[Path, ...], key_args: tuple[str, ...], as_json: bool
) -> None:
    """Check that the log today extends every saved CHECKPOINT: exit 0, or 3 naming
    each one it does not (locally the tree is recomputed from the event rows)."""
    store = ctx.store(create=False)
    held = _keys(store, key_args)
    valid: list[tuple[str, Checkpoint]] = []
    refused: list[AuditFinding] = []
    for path in checkpoints:
        try:
            valid.append((str(path), _checkpoint(path, held)))
        except (InvalidCheckpoint, IntegrityError) as exc:
            size = _size_or_zero(path)
            refused.append(AuditFinding(str(path), size, f"{exc.code}: {exc.detail}"))
    report = store.log_audit(valid, lambda note_text: verify_checkpoint(note_text, held))
    report.checkpoints[:0] = refused
    if as_json:
        emit_json(report.to_json())
    else:
        for finding in report.checkpoints:
            verdict = "ok" if finding.problem is None else f"FAIL: {finding.problem}"
            note(f"{finding.name} (size {finding.size}): {verdict}")
        for problem in report.problems:
            note(f"LOG: {problem}")
        failing = len(report.failing()) + len(report.problems)
        note(
            f"the log holds {report.size} events; "
            + ("it extends every checkpoint" if report.ok else f"{failing} failure(s)")
        )
    if not report.ok:
        raise click.exceptions.Exit(INTEGRITY)


def _size_or_zero(path: Path) -> int:
    try:
        return parse_checkpoint(_read(path))[0].size
    except InvalidCheckpoint:
        return 0


COMMANDS = [log_group]
