"""The manifest: strict parsing, one byte form, stable digests, content comparison."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import blake3
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactstore.errors import (
    InvalidInput,
    InvalidManifest,
    InvalidName,
    InvalidPath,
    InvalidSchema,
)
from artifactstore.model.cbor import canonical_dumps
from artifactstore.model.identity import Digest, Namespace, PackageName, Version
from artifactstore.model.jsonio import canonical_json_dumps, strict_json_loads
from artifactstore.model.manifest import (
    CREATED_ANNOTATION,
    MANIFEST_SCHEMA,
    FileEntry,
    Manifest,
    _media_type,
    media_type_for,
)
from artifactstore.model.paths import PackagePath, check_unique

# --- strategies (shared with test_oci) --------------------------------------------------------

_HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_SEGMENT = st.text(alphabet="abcXYZ019-_éжλ日本", min_size=1, max_size=8).filter(
    lambda s: s.casefold() not in {"aux", "con", "nul", "prn"}
)
_PATH = st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join)
_MEDIA = st.sampled_from(
    ["application/octet-stream", "text/plain", "application/vnd.example+json", "image/png"]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _unique_paths(entries: list[FileEntry]) -> bool:
    try:
        check_unique(e.path for e in entries)
    except InvalidPath:
        return False
    return True


file_entries = st.builds(
    FileEntry,
    path=_PATH.map(PackagePath),
    size=st.integers(min_value=0, max_value=2**63 - 1),
    media_type=_MEDIA,
    blake3=_HEX.map(lambda h: Digest("blake3", h)),
    sha256=_HEX.map(lambda h: Digest("sha256", h)),
)
manifests = st.builds(
    Manifest.build,
    namespace=st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True).map(
        Namespace
    ),
    name=st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True).map(
        PackageName
    ),
    version=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,15}", fullmatch=True).map(Version),
    files=st.lists(file_entries, max_size=5, unique_by=lambda e: e.path.value.casefold()).filter(
        _unique_paths
    ),
    created=st.datetimes(timezones=st.just(UTC)),
    producer=st.text(max_size=20),
    variant=st.none() | st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,6}){0,3}", fullmatch=True),
    metadata=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
    annotations=st.dictionaries(
        st.text(max_size=12).filter(
            lambda k: not k.startswith("vnd.artifactstore.") and k != CREATED_ANNOTATION
        ),
        st.text(max_size=12),
        max_size=4,
    ),
)

# --- fixtures -----------------------------------------------------------------------------------

B3, SHA = "b" * 64, "5" * 64


def entry(path: str, size: int = 1, media_type: str = "text/plain") -> FileEntry:
    return FileEntry(
        PackagePath(path), size, media_type, Digest("blake3", B3), Digest("sha256", SHA)
    )


def sample(**changes: object) -> Manifest:
    fields: dict[str, object] = {
        "namespace": Namespace("ci"),
        "name": PackageName("app"),
        "version": Version("1.4.2"),
        "files": [entry("dist/app.whl", 10, "application/zip"), entry("README.md", 3)],
        "created": "2024-05-01T12:00:00Z",
        "producer": "artifactstore/0.1",
        "variant": "ci.build.v1",
        "metadata": {"branch": "main", "run": 42, "ratio": 0.5, "ok": True, "tags": ["a", None]},
        "annotations": {"org.opencontainers.image.source": "https://example.test/repo"},
    }
    fields.update(changes)
    return Manifest.build(**fields)  # type: ignore[arg-type]


# --- round trips --------------------------------------------------------------------------------


@given(manifests)
def test_round_trips_through_map_cbor_and_json(m: Manifest) -> None:
    assert Manifest.from_map(m.to_map()) == m
    assert Manifest.from_cbor(m.to_cbor()) == m
    assert Manifest.from_json(m.to_json()) == m
    assert Manifest.from_json(m.to_json().encode()).to_cbor() == m.to_cbor()


@given(manifests)
def test_digests_are_stable_and_hash_the_cbor_bytes(m: Manifest) -> None:
    data = m.to_cbor()
    digests = m.digests()
    assert digests == Manifest.from_json(m.to_json()).digests()
    assert digests.blake3 == Digest("blake3", blake3.blake3(data).hexdigest())
    assert digests.sha256 == Digest("sha256", hashlib.sha256(data).hexdigest())
    assert digests.size == len(data)


def test_map_shape_is_exactly_the_spec() -> None:
    m = sample()
    assert m.to_map() == {
        "schema": MANIFEST_SCHEMA,
        "package": {"namespace": "ci", "name": "app", "version": "1.4.2"},
        "files": [
            {
                "path": "README.md",
                "size": 3,
                "media_type": "text/plain",
                "digests": {"blake3": f"blake3:{B3}", "sha256": f"sha256:{SHA}"},
            },
            {
                "path": "dist/app.whl",
                "size": 10,
                "media_type": "application/zip",
                "digests": {"blake3": f"blake3:{B3}", "sha256": f"sha256:{SHA}"},
            },
        ],
        "variant": "ci.build.v1",
        "metadata": {"branch": "main", "run": 42, "ratio": 0.5, "ok": True, "tags": ["a", None]},
        "annotations": {"org.opencontainers.image.source": "https://example.test/repo"},
        "created": "2024-05-01T12:00:00Z",
        "producer": "artifactstore/0.1",
    }
    assert m.total_size == 13
    assert json.loads(m.to_json()) == m.to_map()


def test_golden_digest_pins_the_encoding() -> None:
    # If this changes, every stored package digest changes: that needs a new schema version.
    m = sample()
    assert m.to_cbor()[:8].hex() == "a86566696c657382"  # map(8), "files", array(2)
    assert str(m.digests().blake3) == "blake3:" + blake3.blake3(m.to_cbor()).hexdigest()
    assert m.digests() == sample().digests()
    assert m.digests().blake3.hex == GOLDEN_BLAKE3


GOLDEN_BLAKE3 = "b9db579000760175a000eb54a25a53a9f6daad678c70fe1fce7e9e4952631a26"


def test_unicode_paths_round_trip() -> None:
    m = sample(files=[entry("données/résumé.txt"), entry("日本語/ファイル.bin"), entry("ß/x")])
    assert [f.path.value for f in Manifest.from_cbor(m.to_cbor()).files] == [
        "données/résumé.txt",
        "ß/x",
        "日本語/ファイル.bin",
    ]
    assert Manifest.from_json(m.to_json().encode("utf-8")) == m
    assert "données" in m.to_json()  # rendered as UTF-8, not \u escapes


def test_empty_package() -> None:
    m = sample(files=[], metadata={}, annotations={}, variant=None, producer="")
    assert m.files == () and m.total_size == 0
    assert Manifest.from_cbor(m.to_cbor()) == m
    assert Manifest.from_json(m.to_json()) == m


# --- refusals on the way in ---------------------------------------------------------------------


def test_json_with_duplicate_key_is_refused() -> None:
    text = sample().to_json()
    with pytest.raises(InvalidManifest, match="duplicate key 'schema'"):
        Manifest.from_json('{"schema":"x",' + text[1:])
    nested = text.replace('"metadata":{', '"metadata":{"run":1,', 1)
    with pytest.raises(InvalidManifest, match="duplicate key 'run'"):
        Manifest.from_json(nested)


@pytest.mark.parametrize(
    "bad",
    [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1e400}', b"\xff{}", b"{", b"[]", b'"x"'],
)
def test_bad_json_is_refused(bad: bytes) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.from_json(bad)


def test_cbor_not_in_deterministic_form_is_refused() -> None:
    m = sample()
    body = m.to_map()
    with pytest.raises(InvalidManifest, match="deterministic"):
        Manifest.from_cbor(cbor2.dumps(body))  # insertion order, not canonical
    reordered = dict(reversed(list(body.items())))
    with pytest.raises(InvalidManifest, match="deterministic"):
        Manifest.from_cbor(cbor2.dumps(reordered))
    assert Manifest.from_cbor(cbor2.dumps(body, canonical=True)) == m
    with pytest.raises(InvalidManifest, match="trailing"):
        Manifest.from_cbor(m.to_cbor() + b"\x00")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(extra=1), "unknown keys 'extra'"),
        (lambda d: d.pop("producer"), r"missing \['producer'\]"),
        (lambda d: d["package"].update(tag="x"), "package has unknown keys"),
        (lambda d: d["files"][0].update(mode=420), r"files\[0\] has unknown keys"),
        (lambda d: d["files"][1]["digests"].update(md5="x"), r"files\[1\].digests has unknown"),
        (lambda d: d["files"][0]["digests"].pop("sha256"), r"files\[0\].digests is missing"),
        (lambda d: d.update(schema="artifactstore.manifest.v2"), "schema must be"),
        (lambda d: d["files"][0].update(size="3"), r"files\[0\].size must be an integer"),
        (lambda d: d["files"][0].update(size=True), r"files\[0\].size must be an integer"),
        (lambda d: d["files"][0].update(size=-1), r"files\[0\].size must be in"),
        (lambda d: d["files"][0]["digests"].update(blake3="sha256:" + SHA), "blake3"),
        (lambda d: d["files"][0]["digests"].update(sha256="sha256:XYZ"), r"digests.sha256"),
        (lambda d: d["files"].reverse(), "sorted by path"),
        (lambda d: d["files"].append(d["files"][0]), "twice|sorted"),
        (lambda d: d.update(files={}), "files must be a list"),
        (lambda d: d.update(metadata=[]), "metadata must be a map"),
        (lambda d: d["annotations"].update(k=1), "annotations.k must be a string"),
        (lambda d: d.update(variant=""), "variant"),
        (lambda d: d.update(variant="Bad"), "variant"),
        (lambda d: d.update(created="2024-05-01T12:00:00+00:00"), "created"),
        (lambda d: d.update(producer=None), "producer must be a string"),
    ],
)
def test_from_map_is_strict_and_names_the_field(mutate: object, match: str) -> None:
    body = sample().to_map()
    mutate(body)  # type: ignore[operator]
    with pytest.raises(InvalidManifest, match=match):
        Manifest.from_map(body)


def test_from_map_identity_errors_keep_their_class_and_name_the_field() -> None:
    body = sample().to_map()
    body["package"]["namespace"] = "Bad"  # type: ignore[index]
    with pytest.raises(InvalidName, match=r"package\.namespace"):
        Manifest.from_map(body)
    body = sample().to_map()
    body["files"][0]["path"] = "../etc/passwd"  # type: ignore[index]
    with pytest.raises(InvalidPath, match=r"files\[0\].path"):
        Manifest.from_map(body)
    body = sample().to_map()
    body["files"][0]["path"] = "cafe\u0301"  # type: ignore[index]
    with pytest.raises(InvalidPath, match="NFC"):
        Manifest.from_map(body)


def test_from_map_refuses_non_maps() -> None:
    bad: object
    for bad in (None, [], "x", 1):
        with pytest.raises(InvalidManifest):
            Manifest.from_map(bad)


# --- construction rules -------------------------------------------------------------------------


def test_unsorted_or_duplicate_files_are_refused_by_the_constructor() -> None:
    m = sample()
    with pytest.raises(InvalidManifest, match="sorted by path"):
        dataclasses.replace(m, files=tuple(reversed(m.files)))
    with pytest.raises(InvalidManifest, match="twice"):
        dataclasses.replace(m, files=(m.files[0], m.files[0]))


def test_case_fold_collisions_are_refused() -> None:
    with pytest.raises(InvalidPath, match="collide"):
        sample(files=[entry("A.txt"), entry("a.txt")])
    with pytest.raises(InvalidPath, match="directory"):
        sample(files=[entry("a"), entry("a/b")])


@pytest.mark.parametrize(
    "created",
    [
        "2024-05-01T12:00:00",
        "2024-05-01T12:00:00z",
        "2024-05-01 12:00:00Z",
        "2024-05-01T12:00:00+00:00",
        "2024-13-01T12:00:00Z",
        "2024-02-30T12:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:00:60Z",
        "2024-05-01T12:00:00.1234567Z",
        "2024-05-01T12:00:00.Z",
        "24-05-01T12:00:00Z",
        "\uff12\uff10\uff12\uff14-05-01T12:00:00Z",  # fullwidth digits
    ],
)
def test_created_must_be_rfc3339_utc(created: str) -> None:
    with pytest.raises(InvalidManifest, match="created"):
        sample(created=created)


@pytest.mark.parametrize(
    "created", ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5Z", "2024-02-29T23:59:59.999999Z"]
)
def test_created_accepts_utc_with_optional_fraction(created: str) -> None:
    assert sample(created=created).created == created


def test_build_formats_aware_datetimes_as_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert sample(created=datetime(2024, 5, 1, 14, 0, tzinfo=plus_two)).created == (
        "2024-05-01T12:00:00Z"
    )
    assert sample(created=datetime(5, 1, 2, 3, 4, 5, 60, tzinfo=UTC)).created == (
        "0005-01-02T03:04:05.000060Z"
    )
    with pytest.raises(InvalidManifest, match="timezone-aware"):
        sample(created=datetime(2024, 5, 1))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"variant": "a" * 129}, "variant"),
        ({"variant": "ci..build"}, "variant"),
        ({"producer": "p" * 257}, "producer"),
        ({"annotations": {"vnd.artifactstore.name": "x"}}, "reserved"),
        ({"annotations": {CREATED_ANNOTATION: "x"}}, "reserved"),
        ({"annotations": {"k": 1}}, "annotations.k"),
        ({"metadata": {"x": float("nan")}}, "finite"),
        ({"metadata": {"x": {1: 2}}}, "key must be a string"),
        ({"metadata": {"x": b"bytes"}}, "JSON cannot carry"),
        ({"metadata": {"x": 2**64}}, r"metadata.x must be in"),
        ({"metadata": {"x": "\ud800"}}, "not valid Unicode"),
        ({"metadata": {"x": {1, 2}}}, "JSON cannot carry"),
    ],
)
def test_invalid_fields_are_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidManifest, match=match):
        sample(**changes)


def test_metadata_depth_limit_keeps_documents_loadable() -> None:
    deep: object = 1
    for _ in range(30):
        deep = [deep]
    m = sample(metadata={"x": deep})  # manifest(1) > metadata(2) > 30 lists = 32 levels
    assert Manifest.from_cbor(m.to_cbor()) == m
    assert Manifest.from_json(m.to_json()) == m
    with pytest.raises(InvalidManifest, match="deeper"):
        sample(metadata={"x": [deep]})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": -1}, "size"),
        ({"size": 2**63}, "size"),
        ({"media_type": "text"}, "media_type"),
        ({"media_type": "text/plain; charset=utf-8"}, "media_type"),
        ({"media_type": "a" * 128 + "/b"}, "media_type"),
        ({"blake3": Digest("sha256", SHA)}, "blake3"),
        ({"sha256": Digest("blake3", B3)}, "sha256"),
    ],
)
def test_file_entry_validation(kwargs: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {
        "path": PackagePath("a"),
        "size": 1,
        "media_type": "text/plain",
        "blake3": Digest("blake3", B3),
        "sha256": Digest("sha256", SHA),
    }
    with pytest.raises(InvalidManifest, match=match):
        FileEntry(**{**fields, **kwargs})  # type: ignore[arg-type]


def test_file_entry_digests() -> None:
    e = entry("a", 7)
    assert e.digests.size == 7 and e.digests.blake3 == e.blake3 and e.digests.sha256 == e.sha256


# --- identity and comparison ---------------------------------------------------------------------


def test_same_content_ignores_only_created_and_producer() -> None:
    m = sample()
    later = sample(created="2030-01-01T00:00:00Z", producer="other/9")
    assert m.same_content(later) and later.same_content(m)
    assert m != later
    assert not m.same_content(sample(metadata={"branch": "dev"}))
    assert not m.same_content(sample(annotations={}))
    assert not m.same_content(sample(variant=None))
    assert not m.same_content(sample(files=[entry("README.md", 3)]))
    assert not m.same_content(sample(version=Version("1.4.3")))


def test_equality_is_byte_equality() -> None:
    one, true, float_one = (sample(metadata={"x": v}) for v in (1, True, 1.0))
    assert one != true and one != float_one and true != float_one  # Python says 1 == True == 1.0
    assert not one.same_content(true)
    assert sample() == sample() and hash(sample()) == hash(sample())
    assert len({one, true, float_one, sample(metadata={"x": 1})}) == 3


def test_manifest_is_isolated_from_caller_dicts() -> None:
    metadata: dict[str, object] = {"list": [1]}
    m = sample(metadata=metadata)
    metadata["list"].append(2)  # type: ignore[attr-defined]
    metadata["new"] = 1
    assert m.metadata == {"list": [1]}
    m.to_map()["metadata"]["list"].append(3)  # type: ignore[index]
    assert m.metadata == {"list": [1]}


def test_tuples_in_metadata_become_lists() -> None:
    assert sample(metadata={"t": (1, 2)}) == sample(metadata={"t": [1, 2]})


def test_build_sorts_files() -> None:
    m = sample(files=[entry("b"), entry("a/z"), entry("A0")])
    assert [f.path.value for f in m.files] == ["A0", "a/z", "b"]


def test_identity_fields_must_be_typed() -> None:
    with pytest.raises(InvalidManifest, match=r"package\.namespace"):
        dataclasses.replace(sample(), namespace="ci")  # type: ignore[arg-type]


# --- media types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("report.txt", "text/plain"),
        ("data/x.json", "application/json"),
        ("dist/app.tar.gz", "application/gzip"),
        ("logs.xz", "application/x-xz"),
        ("archive.zip", "application/zip"),
        ("noext", "application/octet-stream"),
        ("weird.unknownext", "application/octet-stream"),
        ("dir.json/file", "application/octet-stream"),
    ],
)
def test_media_type_for(path: str, expected: str) -> None:
    assert media_type_for(path) == expected


_NAME_PART = st.sampled_from(
    ["", "a", "f00042", "tar", "TAR", "gz", "tgz", "svgz", "json", "x", "Z"]
)


@given(st.lists(_NAME_PART, min_size=1, max_size=6).map(".".join))
def test_media_type_for_answers_as_the_table_does_for_the_whole_name(name: str) -> None:
    # media_type_for asks about a shortened name (the stem dropped): same answer.
    assert media_type_for(name) == _media_type(name)


@given(_PATH)
def test_media_type_for_always_gives_a_valid_entry_type(path: str) -> None:
    media_type = media_type_for(path)
    assert entry(path, media_type=media_type).media_type == media_type  # FileEntry validates it


# --- strict JSON (model/jsonio.py) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[" * 100_000, "deeper than 32"),
        ("[" * 33 + "]" * 33, "deeper than 32"),
        ('{"a": "\\ud800"}', "surrogate"),
        ('{"a": 1, "a": 1}', "duplicate key 'a'"),
        ('{"a": -Infinity}', "-Infinity"),
        ("1" * 5000, "invalid JSON"),
        ("{} {}", "invalid JSON"),
        ("\ufeff{}", "invalid JSON"),
    ],
)
def test_strict_json_loads_refusals(text: str, match: str) -> None:
    with pytest.raises(InvalidManifest, match=match):
        strict_json_loads(text)


def test_strict_json_loads_error_class_and_depth_are_configurable() -> None:
    with pytest.raises(InvalidSchema, match="deeper than 2"):
        strict_json_loads(b"[[[]]]", max_depth=2, error=InvalidSchema)
    assert strict_json_loads(b"[[]]", max_depth=2) == [[]]


def test_canonical_json_dumps_is_one_fixed_rendering() -> None:
    assert canonical_json_dumps({"b": [1, 2.5, None], "a": "é", "A": True}) == (
        '{"A":true,"a":"é","b":[1,2.5,null]}'
    )
    for bad in ({1: 2}, float("nan"), b"x", {"a": object()}):
        with pytest.raises(InvalidManifest):
            canonical_json_dumps(bad)


def test_all_errors_are_invalid_input() -> None:
    assert issubclass(InvalidManifest, InvalidInput) and issubclass(InvalidPath, InvalidInput)
    assert canonical_dumps(sample().to_map()) == sample().to_cbor()
