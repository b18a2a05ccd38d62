"""push, pull, ls, show, cat, rm."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import click

from artifactstore.cli.context import CliContext
from artifactstore.cli.output import emit_json, human_size, note, progress_bar, progress_bars
from artifactstore.client.files import collect_files
from artifactstore.config import Settings
from artifactstore.errors import InvalidInput
from artifactstore.model.identity import Reference
from artifactstore.model.jsonio import strict_json_loads
from artifactstore.model.records import PushArgs

__all__ = ["COMMANDS"]

pass_ctx = click.make_pass_decorator(CliContext)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out[key] = value
    return out


@click.command()
@click.argument("ref")
@click.argument(
    "paths",
    nargs=-1,
    required=True,
    # A PATH that does not exist is a bad argument: a usage error (exit 2), found before
    # anything is hashed or the store is opened.
    type=click.Path(exists=True, path_type=Path),
)
@click.option("--meta", "meta", multiple=True, metavar="K=V", help="Metadata entry (repeatable).")
@click.option(
    "--meta-file", type=click.File("rb"), help="JSON object of metadata (merged under --meta)."
)
@click.option("--variant", help="Registered metadata schema id to validate against.")
@click.option(
    "--annotate", multiple=True, metavar="K=V", help="Free string annotation (repeatable)."
)
@click.option(
    "--follow-symlinks", is_flag=True, help="Push what symlinks leaving the tree point to."
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="KEYFILE",
    help="Sign the version with this private key; the signature commits with it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def push(
    ctx: CliContext,
    ref: str,
    paths: tuple[Path, ...],
    meta: tuple[str, ...],
    meta_file: Any,
    variant: str | None,
    annotate: tuple[str, ...],
    follow_symlinks: bool,
    sign_key: Path | None,
    as_json: bool,
) -> None:
    """Push files and directories as package version REF (NS/NAME:VERSION)."""
    reference = Reference.parse(ref)  # a malformed REF is a usage error, whatever else is wrong
    key = None
    if sign_key is not None:  # an unusable key fails before anything is hashed or sent
        from artifactstore.provenance.keys import load_private_key

        key = load_private_key(sign_key)
    metadata: dict[str, Any] = {}
    if meta_file is not None:
        loaded = strict_json_loads(meta_file.read(), error=InvalidInput)
        if not isinstance(loaded, dict):
            raise InvalidInput("--meta-file must hold a JSON object")
        metadata.update(loaded)
    metadata.update(_pairs(meta, "--meta"))
    # A push allocates hundreds of thousands of objects and no garbage in cycles: the
    # cyclic collector's passes took an eighth of a 10,000-file push's CPU time
    # (BENCHMARKS.md). This process ends with the command, so nothing accumulates.
    gc.set_threshold(50_000, 20, 100)
    store = ctx.store()  # a local store's control plane starts opening meanwhile
    # The walk stops past the file limit (a symlink fan-out never runs away).
    max_files = None if ctx.remote else Settings.load(home=ctx.home).max_files
    files = collect_files(
        list(paths), follow_external_symlinks=follow_symlinks, max_files=max_files
    )
    options: PushArgs = {
        "metadata": metadata,
        "variant": variant,
        "annotations": _pairs(annotate, "--annotate"),
        "follow_symlinks": follow_symlinks,
        "walked": files,
        "sign": key,
    }
    # A remote push hashes every file before it sends any: a bar of its own for that.
    labels = (f"hash {ref}", f"push {ref}") if ctx.remote else (f"push {ref}",)
    with progress_bars(sum(f.size for f in files), *labels) as bars:
        options["hash_progress"], options["progress"] = bars[0], bars[-1]
        result = store.push(reference, list(paths), **options)
    rec = result.record
    if as_json:
        emit_json({**rec.summary(), "created": result.created, "blobs_stored": result.blobs_stored})
        return
    state = "pushed" if result.created else "unchanged (identical content already pushed)"
    click.echo(f"{rec.reference} {state}")
    click.echo(f"  digest {rec.digest}")
    click.echo(f"  {rec.file_count} files, {human_size(rec.size)}, {result.blobs_stored} new blobs")


@click.command()
@click.argument("ref")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="Output directory (created if absent).",
)
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@pass_ctx
def pull(ctx: CliContext, ref: str, output: Path, force: bool) -> None:
    """Write every file of REF under a directory, verifying every digest.

    All or nothing: every target is checked before anything is written, and
    an existing file is refused unless --force.
    """
    reference = Reference.parse(ref)
    store = ctx.store(create=False)
    rec = store.show(reference)
    with progress_bar(f"pull {rec.reference}", rec.size) as advance:
        store.pull(rec.reference, output, progress=advance, force=force)
    note(f"{rec.reference}: {rec.file_count} files, {human_size(rec.size)} verified into {output}")


@click.command(name="ls")
@click.argument("prefix", required=False)
@click.option(
    "--where", multiple=True, metavar="K=V", help="Only versions whose metadata K equals V."
)
@click.option("--variant", help="Only versions of this metadata schema.")
@click.option("--limit", type=click.IntRange(1, 1000), default=None, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_ctx
def ls(
    ctx: CliContext,
    prefix: str | None,
    where: tuple[str, ...],
    variant: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List live versions, newest first (PREFIX is NS or NS/NAME)."""
    namespace, _, name = (prefix or "").partition("/")
    records = ctx.store().iter_query(
        namespace=namespace or None,
        name=name or None,
        variant=variant,
        where=_pairs(where, "--where"),
    )
    rows = []
    for rec in records:
        rows.append(rec)
        if limit is not None and len(rows) >= limit:
            break
    if as_json:
        emit_json([r.summary() for r in rows])
        return
    if not rows:
        note("no versions match")
        return
    width = max(len(str(r.reference)) for r in rows)
    for r in rows:
        click.echo(
            f"{r.reference!s:<{width}}  {r.digest.hex[:12]}  {human_size(r.size):>10}  "
            f"{r.file_count:>6} files  {r.committed_at}"
        )


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the summary and manifest as JSON.")
@pass_ctx
def show(ctx: CliContext, ref: str, as_json: bool) -> None:
    """Show one version: digest, metadata and files."""
    reference = Reference.parse(ref)
    store = ctx.store(create=False)
    rec = store.show(reference)
    manifest = rec.require_manifest()
    envelopes = store.signatures(rec.reference)
    if as_json:
        emit_json(
            {
                **rec.summary(),
                "manifest": manifest.to_map(),
                "signatures": [e.to_json() for e in envelopes],
            }
        )
        return
    click.echo(f"{rec.reference}")
    click.echo(f"  digest     {rec.digest}")
    click.echo(f"  sha256     {rec.sha256}")
    click.echo(f"  committed  {rec.committed_at} by {rec.actor}")
    if manifest.variant:
        click.echo(f"  variant    {manifest.variant}")
    for key, value in sorted(manifest.metadata.items()):
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        click.echo(f"  meta       {key}={shown}")
    for key, value in sorted(manifest.annotations.items()):
        click.echo(f"  annotation {key}={value}")
    for envelope in envelopes:
        keys = ", ".join(k or "(no keyid)" for k in envelope.key_ids)
        click.echo(f"  signature  by {keys}")
    click.echo(f"  files      {rec.file_count} ({human_size(rec.size)})")
    for f in manifest.files:
        click.echo(f"    {human_size(f.size):>10}  {f.blake3.hex[:12]}  {f.path}")


@click.command()
@click.argument("ref")
@click.argument("path")
@pass_ctx
def cat(ctx: CliContext, ref: str, path: str) -> None:
    """Write one file of REF to standard output (exit 3 if its bytes are damaged)."""
    reference = Reference.parse(ref)
    out = sys.stdout.buffer
    for chunk in ctx.store(create=False).read_file(reference, path):
        out.write(chunk)
    out.flush()


@click.command()
@click.argument("ref")
@pass_ctx
def rm(ctx: CliContext, ref: str) -> None:
    """Delete version REF (a tombstone; its bytes go when gc finds them unreferenced)."""
    reference = Reference.parse(ref)
    rec = ctx.store(create=False).delete(reference)
    note(f"deleted {rec.reference}; run 'artifactstore gc' to reclaim unreferenced bytes")


COMMANDS = [push, pull, ls, show, cat, rm]
