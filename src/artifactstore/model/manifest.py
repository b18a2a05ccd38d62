"""The package manifest (docs/architecture.md): one map, hashed as deterministic CBOR.

A :class:`Manifest` is valid on construction or construction raised, so code
below the edge never re-checks it. Its byte form is ``to_cbor()``; the package
digest is the BLAKE3 of those bytes. JSON is the same map rendered for people
and HTTP clients. ``from_map`` is strict (exact key sets, exact types) so one
document has one meaning, and every error names the field at fault.

Two choices keep the manifest projectable onto OCI (``model/oci.py``) without
loss: annotation keys under ``vnd.artifactstore.`` and the key
``org.opencontainers.image.created`` are reserved for the projection, and file
sizes are at most ``2**63-1`` (an OCI descriptor size is an int64).
"""

from __future__ import annotations

import itertools
import math
import mimetypes
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, cached_property, lru_cache
from typing import Final, TypeVar, cast

from artifactstore.errors import InvalidManifest, InvalidName, InvalidPath, InvalidReference
from artifactstore.model.cbor import (
    INT_MAX,
    INT_MIN,
    canonical_dumps,
    dumps_validated,
    strict_loads,
)
from artifactstore.model.identity import BlobDigests, Digest, Namespace, PackageName, Version
from artifactstore.model.jsonio import canonical_json_dumps, strict_json_loads
from artifactstore.model.paths import PackagePath, check_unique

__all__ = [
    "CREATED_ANNOTATION",
    "MANIFEST_SCHEMA",
    "MAX_DEPTH",
    "MAX_FILE_SIZE",
    "RESERVED_ANNOTATION_PREFIX",
    "FileEntry",
    "Manifest",
    "media_type_for",
]

MANIFEST_SCHEMA: Final = "artifactstore.manifest.v1"
"""The ``schema`` value of every manifest this module reads or writes."""

MAX_DEPTH: Final = 32
"""Nesting allowed in a manifest document (the manifest map itself is depth 1)."""

MAX_FILE_SIZE: Final = 2**63 - 1
"""Largest file size: an OCI descriptor's ``size`` is an int64."""

RESERVED_ANNOTATION_PREFIX: Final = "vnd.artifactstore."
"""Annotation keys the OCI projection uses for itself; packages may not set them."""

CREATED_ANNOTATION: Final = "org.opencontainers.image.created"
"""Set from ``created`` by the OCI projection, so a package may not set it directly."""

_MAX_MEDIA_TYPE = 255
_MAX_VARIANT = 128
_MAX_PRODUCER = 256
# RFC 6838 section 4.2 restricted-name, as in the OCI descriptor schema; no parameters.
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_VARIANT = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
_CREATED = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?Z"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_COMPRESSION_TYPES: Final = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
}

_MANIFEST_KEYS = frozenset(
    {"schema", "package", "files", "variant", "metadata", "annotations", "created", "producer"}
)
_PACKAGE_KEYS = frozenset({"namespace", "name", "version"})
_FILE_KEYS = frozenset({"path", "size", "media_type", "digests"})
_DIGEST_KEYS = frozenset({"blake3", "sha256"})

_T = TypeVar("_T")


# --- field checks ------------------------------------------------------------------


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _text(value: object, where: str, limit: int | None = None) -> str:
    if type(value) is not str:
        raise InvalidManifest(f"manifest field {where} must be a string, got {_kind(value)}")
    if _SURROGATE.search(value):
        raise InvalidManifest(f"manifest field {where} is not valid Unicode")
    if limit is not None and len(value) > limit:
        raise InvalidManifest(f"manifest field {where} is longer than {limit} characters")
    return value


def _int(value: object, where: str, low: int, high: int) -> int:
    if type(value) is not int:
        raise InvalidManifest(f"manifest field {where} must be an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise InvalidManifest(f"manifest field {where} must be in [{low}, {high}], got {value}")
    return value


def _map(value: object, where: str, keys: frozenset[str] | None = None) -> dict[str, object]:
    if type(value) is not dict:
        raise InvalidManifest(f"manifest field {where} must be a map, got {_kind(value)}")
    if keys is not None:
        missing = keys - value.keys()
        unknown = value.keys() - keys
        if missing:
            raise InvalidManifest(f"manifest field {where} is missing {sorted(missing)}")
        if unknown:
            names = sorted(repr(k)[:80] for k in unknown)[:10]
            raise InvalidManifest(f"manifest field {where} has unknown keys {', '.join(names)}")
    return value


def _parsed(where: str, parse: Callable[[str], _T], value: object) -> _T:
    """Build an identity value, prefixing its error with the manifest field at fault."""
    text = _text(value, where)
    try:
        return parse(text)
    except InvalidReference as exc:
        raise InvalidManifest(f"manifest field {where}: {exc.detail}") from None
    except (InvalidName, InvalidPath) as exc:
        raise type(exc)(f"manifest field {where}: {exc.detail}") from None


def _json_copy(value: object, where: str, depth: int) -> object:
    """Validate a JSON-compatible value that CBOR also carries exactly; return a fresh copy.

    Tuples become lists, so a manifest compares and encodes the same however
    its metadata was built.
    """
    if value is None or type(value) is bool:
        return value
    if type(value) is str:
        return _text(value, where)
    if type(value) is int:
        return _int(value, where, INT_MIN, INT_MAX)
    if type(value) is float:
        if not math.isfinite(value):
            raise InvalidManifest(f"manifest field {where} must be a finite number")
        return value
    if type(value) is dict or type(value) is list or type(value) is tuple:
        if depth >= MAX_DEPTH:
            raise InvalidManifest(f"manifest field {where} nests deeper than {MAX_DEPTH} levels")
        if type(value) is dict:
            out: dict[str, object] = {}
            for key, item in value.items():
                _text(key, f"{where} key")
                out[key] = _json_copy(item, f"{where}.{key[:80]}", depth + 1)
            return out
        return [_json_copy(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise InvalidManifest(f"manifest field {where} holds a {_kind(value)}, which JSON cannot carry")


def _check_created(value: object) -> str:
    text = _text(value, "created")
    match = _CREATED.fullmatch(text)
    if match is None:
        raise InvalidManifest(
            f"manifest field created must be RFC 3339 UTC like 2024-05-01T12:00:00Z, got "
            f"{text[:40]!r}"
        )
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise InvalidManifest(f"manifest field created is not a real time: {exc}") from None
    return text


def _format_created(when: datetime) -> str:
    if when.tzinfo is None:
        raise InvalidManifest("created must be a timezone-aware datetime")
    try:
        utc = when.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidManifest("created is outside the years 0001-9999 in UTC") from None
    # Not strftime: glibc's %Y does not zero-pad years before 1000.
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )
    return f"{text}.{utc.microsecond:06d}Z" if utc.microsecond else f"{text}Z"


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a package: where it goes, how big it is, what it is, and its two digests."""

    path: PackagePath
    size: int
    media_type: str
    blake3: Digest
    sha256: Digest

    def __post_init__(self) -> None:
        where = f"files[{self.path}]" if isinstance(self.path, PackagePath) else "files[]"
        if not isinstance(self.path, PackagePath):
            raise InvalidManifest(f"manifest field {where}.path must be a PackagePath")
        _int(self.size, f"{where}.size", 0, MAX_FILE_SIZE)
        media = _text(self.media_type, f"{where}.media_type", _MAX_MEDIA_TYPE)
        if not _MEDIA_TYPE.fullmatch(media):
            raise InvalidManifest(
                f"manifest field {where}.media_type must be an RFC 6838 type/subtype without "
                f"parameters, got {media[:80]!r}"
            )
        for algorithm in ("blake3", "sha256"):
            digest = getattr(self, algorithm)
            if not isinstance(digest, Digest) or digest.algorithm != algorithm:
                raise InvalidManifest(
                    f"manifest field {where}.digests.{algorithm} must be a {algorithm} Digest"
                )

    @property
    def digests(self) -> BlobDigests:
        """Both digests and the size, as the data plane records a blob."""
        return BlobDigests(self.blake3, self.sha256, self.size)

    def to_map(self) -> dict[str, object]:
        """The manifest map of this entry (digests as full ``algo:hex`` strings)."""
        return {
            "path": self.path.value,
            "size": self.size,
            "media_type": self.media_type,
            "digests": {"blake3": str(self.blake3), "sha256": str(self.sha256)},
        }

    @classmethod
    def from_map(cls, obj: object, where: str = "files[]") -> FileEntry:
        """Parse one ``files`` entry strictly; errors name ``where``."""
        entry = _map(obj, where, _FILE_KEYS)
        digests = _map(entry["digests"], f"{where}.digests", _DIGEST_KEYS)
        return cls(
            path=_parsed(f"{where}.path", PackagePath, entry["path"]),
            size=_int(entry["size"], f"{where}.size", 0, MAX_FILE_SIZE),
            media_type=_text(entry["media_type"], f"{where}.media_type", _MAX_MEDIA_TYPE),
            blake3=_parsed(f"{where}.digests.blake3", Digest.parse, digests["blake3"]),
            sha256=_parsed(f"{where}.digests.sha256", Digest.parse, digests["sha256"]),
        )


@dataclass(frozen=True, eq=False)
class Manifest:
    """One package version (its map: docs/architecture.md).

    Equality and hashing are by canonical CBOR bytes, the package's identity:
    Python's ``==`` would call ``{"a": 1}``, ``{"a": 1.0}`` and ``{"a": True}``
    equal, yet they encode (and hash) differently. ``metadata`` and
    ``annotations`` are copied on construction so later changes to the
    caller's dicts cannot change a built manifest.
    """

    namespace: Namespace
    name: PackageName
    version: Version
    files: tuple[FileEntry, ...]
    variant: str | None
    metadata: dict[str, object]
    annotations: dict[str, str]
    created: str
    producer: str

    def __post_init__(self) -> None:
        for field, kind in (
            ("namespace", Namespace),
            ("name", PackageName),
            ("version", Version),
        ):
            if not isinstance(getattr(self, field), kind):
                raise InvalidManifest(f"manifest field package.{field} must be a {kind.__name__}")
        files = tuple(self.files)
        for entry in files:
            if not isinstance(entry, FileEntry):
                raise InvalidManifest("manifest field files must hold FileEntry values")
        for before, after in itertools.pairwise(files):
            if before.path == after.path:
                raise InvalidManifest(f"manifest field files lists {after.path.value!r} twice")
            if after.path < before.path:
                raise InvalidManifest(
                    f"manifest field files must be sorted by path: {after.path.value!r} comes "
                    f"after {before.path.value!r} (use Manifest.build to sort)"
                )
        check_unique(entry.path for entry in files)
        if self.variant is not None:
            variant = _text(self.variant, "variant", _MAX_VARIANT)
            if not _VARIANT.fullmatch(variant):
                raise InvalidManifest(
                    f"manifest field variant must be lowercase letters and digits separated by "
                    f"single '.', '_' or '-', got {variant[:80]!r}"
                )
        metadata = _json_copy(_map(self.metadata, "metadata"), "metadata", 1)
        annotations: dict[str, str] = {}
        for key, value in _map(self.annotations, "annotations").items():
            _text(key, "annotations key")
            if key.startswith(RESERVED_ANNOTATION_PREFIX) or key == CREATED_ANNOTATION:
                raise InvalidManifest(
                    f"manifest field annotations uses the reserved key {key[:80]!r} "
                    f"('{RESERVED_ANNOTATION_PREFIX}*' and '{CREATED_ANNOTATION}' are set by "
                    "the OCI projection)"
                )
            annotations[key] = _text(value, f"annotations.{key[:80]}")
        _check_created(self.created)
        _text(self.producer, "producer", _MAX_PRODUCER)
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "metadata", metadata)
        object.__setattr__(self, "annotations", annotations)

    @classmethod
    def build(
        cls,
        namespace: Namespace,
        name: PackageName,
        version: Version,
        files: Iterable[FileEntry],
        *,
        created: str | datetime,
        producer: str = "",
        variant: str | None = None,
        metadata: Mapping[str, object] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> Manifest:
        """Build a manifest from files in any order (they are sorted by path).

        ``created`` may be an aware ``datetime``; it is rendered as RFC 3339 UTC.
        """
        return cls(
            namespace=namespace,
            name=name,
            version=version,
            files=tuple(sorted(files, key=lambda entry: entry.path)),
            variant=variant,
            metadata=dict(metadata or {}),
            annotations=dict(annotations or {}),
            created=created if isinstance(created, str) else _format_created(created),
            producer=producer,
        )

    # --- the map ------------------------------------------------------------------------

    def to_map(self) -> dict[str, object]:
        """Exactly the manifest map (a fresh copy; safe to mutate)."""
        return {
            "schema": MANIFEST_SCHEMA,
            "package": {
                "namespace": self.namespace.value,
                "name": self.name.value,
                "version": self.version.value,
            },
            "files": [entry.to_map() for entry in self.files],
            "variant": self.variant,
            "metadata": _json_copy(self.metadata, "metadata", 1),
            "annotations": dict(self.annotations),
            "created": self.created,
            "producer": self.producer,
        }

    @classmethod
    def from_map(cls, obj: object) -> Manifest:
        """Parse the manifest map strictly: exact keys, exact types, known schema.

        Raises :class:`InvalidManifest`, :class:`InvalidPath` or
        :class:`InvalidName`, each naming the field at fault.
        """
        root = _map(obj, "(root)", _MANIFEST_KEYS)
        schema = _text(root["schema"], "schema")
        if schema != MANIFEST_SCHEMA:
            raise InvalidManifest(
                f"manifest field schema must be {MANIFEST_SCHEMA!r}, got {schema[:80]!r}"
            )
        package = _map(root["package"], "package", _PACKAGE_KEYS)
        files = root["files"]
        if type(files) is not list:
            raise InvalidManifest(f"manifest field files must be a list, got {_kind(files)}")
        variant = root["variant"]
        return cls(
            namespace=_parsed("package.namespace", Namespace, package["namespace"]),
            name=_parsed("package.name", PackageName, package["name"]),
            version=_parsed("package.version", Version, package["version"]),
            files=tuple(FileEntry.from_map(f, f"files[{i}]") for i, f in enumerate(files)),
            variant=None if variant is None else _text(variant, "variant"),
            metadata=_map(root["metadata"], "metadata"),
            annotations=cast(dict[str, str], _map(root["annotations"], "annotations")),
            created=_text(root["created"], "created"),
            producer=_text(root["producer"], "producer"),
        )

    # --- byte forms -----------------------------------------------------------------------

    def to_cbor(self) -> bytes:
        """The canonical CBOR bytes: what is hashed and signed."""
        return self._cbor

    @cached_property
    def _cbor(self) -> bytes:
        # Encoded once per manifest: a push asks for the bytes and the digests
        # several times. Every field was validated when the manifest was built.
        return dumps_validated(self.to_map())

    @classmethod
    def from_cbor(cls, data: bytes) -> Manifest:
        """Parse CBOR that must already be in deterministic form (else InvalidManifest)."""
        manifest = cls.from_map(strict_loads(data, max_depth=MAX_DEPTH))
        if manifest.to_cbor() != bytes(data):  # strict parsing makes this unreachable
            raise InvalidManifest("manifest CBOR does not re-encode to the same bytes")
        return manifest

    def to_json(self) -> str:
        """The JSON rendering (sorted keys, compact); not the hashed form."""
        return canonical_json_dumps(self.to_map())

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse a JSON rendering; duplicate keys, NaN and bad UTF-8 are refused."""
        return cls.from_map(strict_json_loads(data, max_depth=MAX_DEPTH))

    # --- identity -------------------------------------------------------------------------

    def digests(self) -> BlobDigests:
        """BLAKE3 (the package digest) and SHA-256 of :meth:`to_cbor`, and its size."""
        return BlobDigests.of(self.to_cbor())

    def blob_ids(self) -> list[str]:
        """The BLAKE3 digests of the manifest's blobs, each once, sorted."""
        return sorted({str(f.blake3) for f in self.files})

    def same_content(self, other: Manifest) -> bool:
        """True if only ``created`` and ``producer`` differ: re-pushing it is a no-op."""

        def content(manifest: Manifest) -> bytes:
            body = manifest.to_map()
            del body["created"], body["producer"]
            return canonical_dumps(body)

        return content(self) == content(other)

    @property
    def total_size(self) -> int:
        """Sum of the file sizes."""
        return sum(entry.size for entry in self.files)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return self.to_cbor() == other.to_cbor()

    def __hash__(self) -> int:
        return hash(self.to_cbor())


@cache
def _mime_table() -> mimetypes.MimeTypes:
    # Python's built-in table only (not the host's /etc/mime.types), so the same
    # file gets the same media type, and the same manifest digest, on every machine.
    return mimetypes.MimeTypes()


def media_type_for(path: str) -> str:
    """Guess a file's media type from its name; ``application/octet-stream`` if unknown.

    Compressed files get the compression's type (``x.tar.gz`` is
    ``application/gzip``): that is what the bytes are.
    """
    name = path.rsplit("/", 1)[-1]
    parts = name.lstrip(".").split(".")
    if len(parts) > 1:
        # guess_type reads at most the last two suffixes (leading dots are not
        # suffixes), so "f00042.bin" asks the table what "x.bin" does: one
        # lookup per kind of name instead of one per file.
        name = "x." + ".".join(parts[1:][-2:])
    return _media_type(name)


@lru_cache(maxsize=1024)
def _media_type(name: str) -> str:
    kind, encoding = _mime_table().guess_type(name, strict=True)
    if encoding is not None:
        return _COMPRESSION_TYPES.get(encoding, "application/octet-stream")
    if kind is None or not _MEDIA_TYPE.fullmatch(kind):
        return "application/octet-stream"
    return kind
