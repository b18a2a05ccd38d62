"""PackagePath and identity values: everything unsafe is refused, everything safe round-trips."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from artifactstore.errors import InvalidInput, InvalidName, InvalidPath, InvalidReference
from artifactstore.model.identity import (
    BlobDigests,
    Digest,
    Namespace,
    PackageName,
    Reference,
    Version,
)
from artifactstore.model.paths import MAX_PATH_BYTES, PackagePath, check_unique

# Letters and digits, ASCII and not, each already NFC and none combining.
_SAFE_CHARS = "abcxyzABCXYZ0189-_éñßøåçüÉÑжЩλΠ日本語한국"
_RESERVED = re.compile(r"(?:CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(?:\..*)?", re.IGNORECASE)

segments = st.builds(
    lambda stem, ext: f"{stem}.{ext}" if ext else stem,
    st.text(alphabet=_SAFE_CHARS, min_size=1, max_size=12),
    st.text(alphabet=_SAFE_CHARS, max_size=4),
).filter(lambda s: not _RESERVED.fullmatch(s))
safe_paths = st.lists(segments, min_size=1, max_size=5).map("/".join)


def _with_segment(path: str, index: int, segment: str) -> str:
    parts = path.split("/")
    parts.insert(index % (len(parts) + 1), segment)
    return "/".join(parts)


@given(safe_paths)
def test_safe_paths_are_accepted_and_round_trip(path: str) -> None:
    parsed = PackagePath(path)
    assert parsed.value == str(parsed) == path
    assert PackagePath(str(parsed)) == parsed
    assert parsed.parts == path.split("/")


@given(safe_paths, st.integers(0, 10), st.sampled_from(["..", ".", ""]))
def test_dot_dot_dot_and_empty_segments_anywhere_are_refused(
    path: str, index: int, segment: str
) -> None:
    with pytest.raises(InvalidPath):
        PackagePath(_with_segment(path, index, segment))


@given(safe_paths)
def test_absolute_and_trailing_slash_are_refused(path: str) -> None:
    for bad in ("/" + path, path + "/", "//" + path):
        with pytest.raises(InvalidPath):
            PackagePath(bad)


@given(
    safe_paths,
    st.integers(0, 2000),
    st.sampled_from(
        ["\\", "\x00"]
        + [chr(c) for c in range(0x20)]
        + [chr(c) for c in range(0x7F, 0xA0)]
        + list('<>:"|?*')
    ),
)
def test_forbidden_characters_anywhere_are_refused(path: str, at: int, char: str) -> None:
    at %= len(path) + 1
    with pytest.raises(InvalidPath):
        PackagePath(path[:at] + char + path[at:])


@pytest.mark.parametrize("code", [*range(0x20), *range(0x7F, 0xA0)])
def test_every_control_character_is_refused(code: int) -> None:
    with pytest.raises(InvalidPath, match="control"):
        PackagePath(f"a/b{chr(code)}c")


@given(safe_paths, st.integers(0, 10))
def test_non_nfc_text_is_refused(path: str, index: int) -> None:
    with pytest.raises(InvalidPath, match="NFC"):
        PackagePath(_with_segment(path, index, "caf" + "e\u0301"))


@given(
    safe_paths,
    st.integers(0, 10),
    st.sampled_from(["CON", "prn.txt", "Com1", "LPT9.log", "aux", "nul.tar.gz", "coM9", "lpt1"]),
)
def test_windows_reserved_names_are_refused(path: str, index: int, name: str) -> None:
    with pytest.raises(InvalidPath, match="reserves"):
        PackagePath(_with_segment(path, index, name))


@pytest.mark.parametrize("name", ["CONSOLE", "com10", "lpt", "xcon", "com0.txt"])
def test_names_that_only_resemble_reserved_ones_are_accepted(name: str) -> None:
    assert PackagePath(f"dir/{name}").value == f"dir/{name}"


@given(safe_paths, st.integers(0, 10), st.sampled_from([".", " "]))
def test_trailing_dot_or_space_is_refused(path: str, index: int, tail: str) -> None:
    with pytest.raises(InvalidPath):
        PackagePath(_with_segment(path, index, "name" + tail))


def test_length_is_counted_in_utf8_bytes() -> None:
    assert PackagePath("a" * MAX_PATH_BYTES).value == "a" * MAX_PATH_BYTES
    with pytest.raises(InvalidPath, match="longer"):
        PackagePath("a" * (MAX_PATH_BYTES + 1))
    with pytest.raises(InvalidPath, match="longer"):
        PackagePath("é" * 513)  # 513 characters, 1026 bytes
    with pytest.raises(InvalidPath, match="longer"):
        PackagePath("ab/" * 400 + "c")


@pytest.mark.parametrize("bad", ["", "..", "../etc/passwd", "a/../b", "\ud800", "C:/x", "a\\b"])
def test_classic_traversal_forms_are_refused(bad: str) -> None:
    with pytest.raises(InvalidPath):
        PackagePath(bad)


@given(safe_paths)
def test_case_fold_collisions_are_refused(path: str) -> None:
    variant = path.swapcase()
    assume(variant != path)
    with pytest.raises(InvalidPath, match="collide"):
        check_unique([PackagePath(path), PackagePath(variant)])


def test_case_folding_is_full_unicode_folding() -> None:
    with pytest.raises(InvalidPath, match="collide"):
        check_unique([PackagePath("straße.txt"), PackagePath("STRASSE.txt")])


def test_file_that_is_also_a_directory_is_refused() -> None:
    with pytest.raises(InvalidPath, match="directory"):
        check_unique([PackagePath("a/b"), PackagePath("A")])


@given(st.lists(safe_paths, max_size=8))
def test_distinct_paths_pass_check_unique(paths: list[str]) -> None:
    folded = [p.casefold() for p in paths]
    assume(len(set(folded)) == len(folded))
    assume(not any(other.startswith(p + "/") for p in folded for other in folded))
    check_unique(PackagePath(p) for p in paths)


def test_paths_order_by_code_point_which_is_utf8_byte_order() -> None:
    paths = ["b", "a/z", "é", "Z", "日", "\U0001f600", "\uffff"]
    ordered = sorted(PackagePath(p) for p in paths)
    assert [p.value for p in ordered] == sorted(paths, key=lambda p: p.encode())


# --- identity ---------------------------------------------------------------------------------

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_digest_parse_and_render(algorithm: str) -> None:
    digest = Digest.parse(f"{algorithm}:{HEX}")
    assert (digest.algorithm, digest.hex) == (algorithm, HEX)
    assert str(digest) == f"{algorithm}:{HEX}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        HEX,
        f"md5:{HEX}",
        f"sha512:{HEX}",
        f"BLAKE3:{HEX}",
        f"blake3:{HEX.upper()}",
        f"blake3:{HEX[:-1]}",
        f"blake3:{HEX}0",
        f"blake3:{HEX[:-1]}g",
        f"blake3: {HEX}",
        "blake3:",
    ],
)
def test_digest_parse_refuses_bad_forms(text: str) -> None:
    with pytest.raises(InvalidReference):
        Digest.parse(text)


def test_blob_digests_match_either_algorithm() -> None:
    b3, sha = Digest("blake3", HEX), Digest("sha256", HEX[::-1])
    both = BlobDigests(b3, sha, 5)
    assert both.get("sha256") == sha
    assert both.matches(b3) and both.matches(sha)
    assert not both.matches(Digest("sha256", HEX))


@pytest.mark.parametrize(
    ("text", "version", "digest"),
    [
        ("ci/app:1.4.2", "1.4.2", None),
        ("ci/app:latest", "latest", None),
        ("a.b-c_d/x.y:_v1+build.7", "_v1+build.7", None),
        (f"ci/app@blake3:{HEX}", None, f"blake3:{HEX}"),
        (f"ci/app@sha256:{HEX}", None, f"sha256:{HEX}"),
    ],
)
def test_reference_parse_good_forms(text: str, version: str | None, digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.version and ref.version.value) == version
    assert (ref.digest and str(ref.digest)) == digest
    assert str(ref) == text
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ci",
        "ci/app",
        "ci/app:",
        "/app:1",
        "Ci/app:1",
        "ci/App:1",
        "ci/app:1 0",
        "ci/app:.1",
        "ci/a/b:1",
        "ci/app@",
        "ci/app@md5:abc",
        f"ci/app@blake3:{HEX[:10]}",
        f"ci/app:1@blake3:{HEX}",
    ],
)
def test_reference_parse_bad_forms(text: str) -> None:
    with pytest.raises(InvalidInput):
        Reference.parse(text)


def test_reference_needs_exactly_one_of_version_and_digest() -> None:
    ns, name = Namespace("ci"), PackageName("app")
    with pytest.raises(InvalidReference):
        Reference(ns, name)
    with pytest.raises(InvalidReference):
        Reference(ns, name, Version("1"), Digest("blake3", HEX))
    assert str(Reference.of("ci", "app", "1")) == "ci/app:1"


@pytest.mark.parametrize(("kind", "limit"), [(Namespace, 64), (PackageName, 128)])
def test_name_grammar_and_length_limits(
    kind: type[Namespace] | type[PackageName], limit: int
) -> None:
    for good in ["a", "0", "a.b-c_d", "x9.y8", "a" * limit, "ab-" * ((limit - 1) // 3) + "z"]:
        if len(good) <= limit:
            assert kind(good).value == good
    for bad in ["", "A", "-a", "a-", "a..b", "a__b", "a.-b", "a/b", "é", " a", "a" * (limit + 1)]:
        with pytest.raises(InvalidName):
            kind(bad)


def test_version_grammar_and_length_limit() -> None:
    for good in ["1", "1.0.0", "_x", "v1+build.7", "RC-1", "a" * 128]:
        assert Version(good).value == good
    for bad in ["", ".1", "-1", "+1", "1/2", "1 0", "1:0", "é", "a" * 129]:
        with pytest.raises(InvalidName):
            Version(bad)
