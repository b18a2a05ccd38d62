"""The local file system on the client side of a push or pull.

Push: turn the command line's PATH arguments into validated package paths.
A directory contributes its contents (relative to itself), a file its own
name. Symlinks are followed only while they stay inside the argument's tree;
one that leaves it is refused unless the caller opts in, so a push never
uploads ``~/.ssh`` because a build left a link behind.

Pull (local and remote alike): write files only below the output directory,
re-validating every path from the manifest (a pull never trusts the server's
paths). Every target is checked before a byte is fetched (a symbolic link, a
file or directory in the way, an existing file unless forced: refused), and
the files go through a staging directory, so that nothing partial or
unverified is ever visible and a refused pull leaves the directory as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from artifactstore.errors import (
    Conflict,
    InvalidInput,
    InvalidPath,
    InvalidReference,
    LimitExceeded,
    StorageError,
)
from artifactstore.model.identity import BlobDigests, Reference
from artifactstore.model.manifest import FileEntry, Manifest, media_type_for
from artifactstore.model.paths import PackagePath, check_unique
from artifactstore.model.records import LocalFile

__all__ = [
    "LocalFile",
    "PullStaging",
    "collect_files",
    "manifest_for",
    "plan_pull",
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


def _in_the_way(path: Path) -> str | None:
    """Why nothing may be created at ``path`` (a directory the pull needs), or None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link (a pull never writes through one)"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is a file where the package has a directory"
    return None


def _is_directory(path: Path) -> bool:
    """A directory itself (a symbolic link to one is not)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def plan_pull(dest: Path, files: Sequence[FileEntry], *, force: bool) -> list[Path]:
    """Where each file of a pull into ``dest`` lands; raises before anything is written.

    Every path is re-validated (a pull never trusts the server's paths). Refused:
    an output that is not a directory; a symbolic link, or a file, where the
    package needs a directory; a directory where it has a file; an existing
    file, unless ``force`` (then it is replaced: a symbolic link itself, never
    what it points to). The first problem is named, with a count of the others.
    """
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InvalidInput(f"cannot use {dest} as the output directory: {exc.strerror}") from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{dest} is not a directory: pull writes into a directory (-o DIR)")
    if st is None:
        if os.path.islink(dest):
            raise InvalidInput(f"{dest} is a broken symbolic link")
        above = next(p for p in Path(os.path.normpath(dest.absolute())).parents if p.exists())
        if not above.is_dir():
            raise InvalidInput(f"cannot create {dest}: {above} is not a directory")
    checked: dict[Path, str | None] = {}  # directories looked at, and what is wrong there
    blocked: list[str] = []  # what --force cannot fix
    existing: list[str] = []
    targets: list[Path] = []
    for entry in files:
        parts = PackagePath(entry.path.value).parts
        final = dest.joinpath(*parts)
        targets.append(final)
        if st is None:
            continue  # a new directory: nothing can be in the way
        directory, problem = dest, None
        for part in parts[:-1]:
            directory = directory / part
            if directory not in checked:
                checked[directory] = _in_the_way(directory)
            problem = checked[directory]
            if problem is not None:
                break
        if problem is not None:
            if problem not in blocked:
                blocked.append(problem)
            continue
        try:
            mode = os.lstat(final).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            blocked.append(f"{final} is a directory where the package has a file")
        elif not force:
            existing.append(f"{final} exists")
    if blocked:
        raise Conflict(_first(blocked) + ": nothing was written")
    if existing:
        raise Conflict(_first(existing) + ": nothing was written (--force overwrites)")
    return targets


def _first(problems: list[str]) -> str:
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more)" if more else "")


class PullStaging:
    """A pull's files, written where nobody looks and moved into place together.

    Into a new directory: the files are written under a hidden sibling
    (``.NAME.artifactstore-pull-*``) that is renamed to ``dest`` at the end, in
    one step. Into an existing directory: under ``dest/.artifactstore-pull-*``,
    then each is renamed to its name; should one rename fail, those done are
    undone (a replaced file comes back), so a refused or failed pull leaves the
    directory as it found it.
    """

    def __init__(self, dest: Path, targets: Sequence[Path], *, force: bool) -> None:
        self.dest = dest
        self.force = force
        self._fresh = not os.path.lexists(dest)
        base = Path(os.path.normpath(dest.absolute())) if self._fresh else dest
        # Directories this pull creates, deepest first: a cancelled pull removes them.
        self._created: list[Path] = []
        if self._fresh:
            self._created = [p for p in base.parents if not p.exists()]
            base.parent.mkdir(parents=True, exist_ok=True)
            self.root = base.parent / f".{base.name}.artifactstore-pull-{secrets.token_hex(6)}"
        else:
            self.root = dest / f".artifactstore-pull-{secrets.token_hex(6)}"
        self.root.mkdir()
        self._files = [(self.root / "files" / t.relative_to(dest), t) for t in targets]
        self._replaced = self.root / "replaced"

    def parts(self) -> Iterator[Path]:
        """Where to write each file, in the order of ``targets``."""
        for part, _final in self._files:
            part.parent.mkdir(parents=True, exist_ok=True)
            yield part

    def commit(self) -> None:
        if self._fresh:
            files = self.root / "files"
            files.mkdir(exist_ok=True)  # a package without files still makes its directory
            os.rename(files, self.dest)
        else:
            self._merge()
        self._created = []
        self.cancel()

    def _merge(self) -> None:
        done: list[tuple[Path, Path | None]] = []  # (final name, the file it replaced)
        created: list[Path] = []
        ready = {self.dest}  # directories known to be in place
        try:
            for i, (part, final) in enumerate(self._files):
                if final.parent not in ready:
                    created = _make_dirs(final.parent, until=self.dest) + created
                    ready.add(final.parent)
                backup = None
                if os.path.lexists(final):  # checked before writing; here only if it raced
                    if not self.force or os.path.isdir(final):
                        raise Conflict(f"{final} appeared during the pull: nothing was written")
                    self._replaced.mkdir(exist_ok=True)
                    backup = self._replaced / str(i)
                    os.rename(final, backup)
                try:
                    os.rename(part, final)
                except BaseException:
                    if backup is not None:
                        os.rename(backup, final)
                    raise
                done.append((final, backup))
        except BaseException:
            for final, backup in reversed(done):
                with contextlib.suppress(OSError):
                    if backup is None:
                        os.unlink(final)
                    else:
                        os.rename(backup, final)
            _remove_dirs(created)
            raise

    def cancel(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        _remove_dirs(self._created)
        self._created = []


def _make_dirs(path: Path, until: Path) -> list[Path]:
    """Create ``path`` and its missing parents below ``until``; those created, deepest
    first. A symbolic link or a file where a directory goes is refused (Conflict)."""
    missing: list[Path] = []
    probe = path
    while probe not in (until, probe.parent) and not _is_directory(probe):
        missing.append(probe)
        probe = probe.parent
    created: list[Path] = []
    try:
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                problem = _in_the_way(directory)
                if problem is not None:
                    raise Conflict(problem + ": nothing was written") from None
                continue
            created.insert(0, directory)
    except BaseException:
        _remove_dirs(created)
        raise
    return created


def _remove_dirs(directories: Sequence[Path]) -> None:
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


def pull_into(
    dest: Path,
    manifest: Manifest,
    stream: Callable[[FileEntry], Iterator[bytes]],
    progress: Callable[[int], None],
    *,
    force: bool = False,
) -> None:
    """Write every file of ``manifest`` under ``dest`` from verified streams; all or nothing.

    Every target is checked before the first byte is fetched (``plan_pull``).
    ``stream`` raises (DigestMismatch) after the last chunk of a damaged file,
    which cancels the whole pull before anything reaches its final name. A
    file system that refuses a write (permissions, a full disk) is a
    StorageError naming the path.
    """
    targets = plan_pull(dest, manifest.files, force=force)
    try:
        staging = PullStaging(dest, targets, force=force)
    except OSError as exc:
        raise StorageError(f"cannot write into {dest}: {exc.strerror}") from None
    try:
        for entry, part in zip(manifest.files, staging.parts(), strict=True):
            with part.open("wb") as out:
                for chunk in stream(entry):
                    out.write(chunk)
                    progress(len(chunk))
        staging.commit()
    except OSError as exc:
        staging.cancel()
        where = exc.filename or dest
        raise StorageError(f"cannot write {where}: {exc.strerror}; nothing was written") from None
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
