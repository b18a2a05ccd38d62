"""The local file system on the client side of a push or pull.

Push: turn the command line's PATH arguments into validated package paths.
A directory contributes its contents (relative to itself), a file its own
name. Symlinks are followed only while they stay inside the argument's tree;
one that leaves it is refused unless the caller opts in, so a push never
uploads ``~/.ssh`` because a build left a link behind.

Pull: write files only below the output directory, re-validating every path
from the manifest (a pull never trusts the server's paths), through a
staging directory so that nothing partial or unverified is ever visible.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from artifactstore.errors import InvalidInput, InvalidPath, InvalidReference, LimitExceeded
from artifactstore.model.identity import BlobDigests, Reference
from artifactstore.model.manifest import FileEntry, Manifest, media_type_for
from artifactstore.model.paths import PackagePath, check_unique
from artifactstore.model.records import LocalFile

__all__ = [
    "LocalFile",
    "PullStaging",
    "collect_files",
    "manifest_for",
    "pull_into",
    "version_reference",
]


def _package_path(rel: str, source: str) -> PackagePath:
    try:
        return PackagePath(rel)
    except InvalidPath as exc:
        raise InvalidPath(f"{source}: {exc.detail}") from None


def collect_files(
    args: list[Path], *, follow_external_symlinks: bool = False, max_files: int | None = None
) -> list[LocalFile]:
    """Every regular file named by ``args``, sorted by package path.

    ``max_files`` stops the walk as soon as it is exceeded (directory symlinks
    inside the tree may repeat a subtree, so a small tree can name many files).
    """
    out: dict[str, LocalFile] = {}

    def add(rel: str, source: str, stat: Callable[[], os.stat_result]) -> None:
        p = _package_path(rel, source)
        if p.value in out:
            raise InvalidInput(
                f"{source} and {out[p.value].source} would both be stored as {p.value!r}"
            )
        if max_files is not None and len(out) >= max_files:
            raise LimitExceeded(f"more than {max_files} files: over the limit")
        try:
            size = stat().st_size
        except OSError as exc:
            raise InvalidInput(f"cannot read {source}: {exc.strerror}") from None
        out[p.value] = LocalFile(p, source, size)

    for arg in args:
        if not arg.exists():
            if arg.is_symlink():
                raise InvalidInput(f"{arg} is a broken symbolic link")
            raise InvalidInput(
                f"{arg} does not exist: check the path (pushes take files and directories)"
            )
        if arg.is_file():
            name = arg.resolve().name if arg.name in ("", ".", "..") else arg.name
            add(name, str(arg), arg.stat)
            continue
        if not arg.is_dir():
            raise InvalidInput(f"{arg} is neither a regular file nor a directory")
        root = arg.resolve()
        # Each directory to walk, with the real paths of the directories above it: a
        # directory symlink is a loop only if it leads back to one of those (another
        # route to a directory elsewhere in the tree is an alias, and fine).
        stack: list[tuple[Path, str, frozenset[Path]]] = [(arg, "", frozenset({root}))]
        while stack:
            directory, prefix, ancestors = stack.pop()
            try:
                listing = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as exc:
                raise InvalidInput(f"cannot read directory {directory}: {exc.strerror}") from None
            for entry in listing:
                rel = prefix + entry.name
                if entry.is_file(follow_symlinks=False):  # the common case, kept cheap
                    add(rel, entry.path, entry.stat)  # a DirEntry's stat: no path to parse
                    continue
                full = Path(entry.path)
                if entry.is_symlink():
                    try:
                        target = full.resolve()
                    except (RuntimeError, OSError):  # Python 3.11 raises on a loop
                        raise InvalidInput(f"{full} is a symbolic link loop") from None
                    inside = target == root or root in target.parents
                    if not target.exists():
                        raise InvalidInput(f"{full} is a broken symbolic link")
                    if not inside and not follow_external_symlinks:
                        raise InvalidInput(
                            f"{full} is a symbolic link to {target}, outside {arg}: refused "
                            "(pass --follow-symlinks to push what it points to)"
                        )
                if entry.is_dir(follow_symlinks=True):
                    real = full.resolve()
                    if real in ancestors:
                        raise InvalidInput(f"{full} is a directory loop (back to {real})")
                    stack.append((full, rel + "/", ancestors | {real}))
                elif entry.is_file(follow_symlinks=True):
                    add(rel, entry.path, entry.stat)
                else:
                    raise InvalidInput(f"{full} is not a regular file (device, socket or pipe)")
    files = [out[k] for k in sorted(out)]
    check_unique(f.path for f in files)
    return files


class PullStaging:
    """Files written under ``DIR/.artifactstore-pull-*`` and moved into place together."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        # Directories this pull creates, deepest first: a cancelled pull removes them.
        self._created = [p for p in (dest, *dest.absolute().parents) if not p.exists()]
        dest.mkdir(parents=True, exist_ok=True)
        self.root = dest / f".artifactstore-pull-{secrets.token_hex(6)}"
        self.root.mkdir()
        self._moves: list[tuple[Path, Path]] = []

    def target(self, path: PackagePath) -> Path:
        """Where ``path`` will land; re-validates and refuses anything leaving ``dest``."""
        checked = PackagePath(path.value)
        final = self.dest.joinpath(*checked.parts)
        base = self.dest.resolve()
        parent = final.parent
        # An existing symlinked directory in the output tree must not redirect the write.
        probe = parent
        while probe != self.dest and probe != probe.parent:
            if probe.is_symlink():
                raise InvalidPath(f"refusing to write {path.value!r} through symbolic link {probe}")
            probe = probe.parent
        if parent.exists() and not (parent.resolve() == base or base in parent.resolve().parents):
            raise InvalidPath(f"refusing to write {path.value!r} outside {self.dest}")
        return final

    def new_file(self, path: PackagePath) -> tuple[Path, Path]:
        final = self.target(path)
        part = self.root / f"{len(self._moves)}.part"
        self._moves.append((part, final))
        return part, final

    def commit(self) -> None:
        for part, final in self._moves:
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.is_symlink() or final.is_dir():
                raise InvalidPath(
                    f"refusing to replace {final}: it is a symbolic link or a directory"
                )
            os.replace(part, final)
        self._created = []
        self.cancel()

    def cancel(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        for directory in self._created:
            with contextlib.suppress(OSError):
                directory.rmdir()


def pull_into(
    dest: Path,
    manifest: Manifest,
    stream: Callable[[FileEntry], Iterator[bytes]],
    progress: Callable[[int], None],
) -> None:
    """Write every file of ``manifest`` under ``dest`` from verified streams; all or nothing.

    ``stream`` raises (DigestMismatch) after the last chunk of a damaged file,
    which cancels the whole pull before anything reaches its final name.
    """
    staging = PullStaging(dest)
    try:
        for entry in manifest.files:
            part, _final = staging.new_file(entry.path)
            with part.open("wb") as out:
                for chunk in stream(entry):
                    out.write(chunk)
                    progress(len(chunk))
        staging.commit()
    except BaseException:
        staging.cancel()
        raise


def version_reference(ref: str | Reference) -> Reference:
    """A reference that names a version (pushes need one; digests name content)."""
    r = Reference.parse(ref) if isinstance(ref, str) else ref
    if r.version is None:
        raise InvalidReference(f"{r} names a digest; pushing needs NAMESPACE/NAME:VERSION")
    return r


def manifest_for(
    ref: Reference,
    files: Sequence[LocalFile],
    digests: Sequence[BlobDigests],
    *,
    metadata: Mapping[str, Any] | None,
    variant: str | None,
    annotations: Mapping[str, str] | None,
    producer: str,
    created: str,
) -> Manifest:
    """The manifest of a push: one entry per local file with the digests it hashed to."""
    assert ref.version is not None
    return Manifest.build(
        ref.namespace,
        ref.name,
        ref.version,
        [
            FileEntry(f.path, d.size, media_type_for(f.path.value), d.blake3, d.sha256)
            for f, d in zip(files, digests, strict=True)
        ],
        created=created,
        producer=producer,
        variant=variant,
        metadata=dict(metadata or {}),
        annotations=dict(annotations or {}),
    )
