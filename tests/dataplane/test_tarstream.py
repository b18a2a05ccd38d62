"""The batch route's tar parser takes its body in pieces of any size and sees the same members."""

from __future__ import annotations

import io
import os
import random
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.dataplane.tarstream import MAX_PAX, TarMembers
from artifactstore.errors import InvalidInput, LimitExceeded
from tests.server.test_blob_batches import tar_of


def _parse(body: bytes, pieces: list[int], **limits: int) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    parser = TarMembers(
        lambda n, d: got.append((n, d)),
        max_member=limits.get("max_member", 1 << 20),
        max_members=limits.get("max_members", 1000),
    )
    pos = 0
    for n in pieces:
        parser.feed(memoryview(body)[pos : pos + n])
        pos += n
    parser.feed(body[pos:])
    parser.close()
    return got


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_any_split_of_the_stream_gives_the_same_members(fmt: int) -> None:
    rng = random.Random(fmt)
    members = [(f"m{i}", os.urandom(rng.choice([0, 1, 511, 512, 513, 3000]))) for i in range(40)]
    if fmt == tarfile.PAX_FORMAT:
        members.append(("p/" + "é" * 80, b"a pax path"))  # non-ASCII: a pax record
    body = tar_of(members, fmt)
    for piece in (7, 511, 512, 4096):
        assert _parse(body, [piece] * (len(body) // piece)) == members
    cuts = sorted(rng.sample(range(len(body)), 30))
    assert _parse(body, [b - a for a, b in zip([0, *cuts], cuts, strict=False)]) == members


def test_a_member_over_the_limit_is_refused_at_its_header() -> None:
    body = tar_of([("a", b"x" * 100), ("b", b"y" * 101)])
    seen: list[str] = []
    parser = TarMembers(lambda n, _d: seen.append(n), max_member=100, max_members=10)
    with pytest.raises(LimitExceeded, match="'b' is 101 bytes"):
        parser.feed(body[: 512 * 4])  # b's header, not its data
    assert seen == ["a"]


def test_too_many_members_are_refused() -> None:
    with pytest.raises(LimitExceeded, match="more than 2 members"):
        _parse(tar_of([("a", b""), ("b", b""), ("c", b"")]), [], max_members=2)


def test_a_huge_pax_header_is_refused() -> None:
    info = tarfile.TarInfo("a")
    info.pax_headers = {"comment": "x" * (MAX_PAX + 1)}
    body = info.tobuf(format=tarfile.PAX_FORMAT) + bytes(1024)
    with pytest.raises(LimitExceeded, match="pax header"):
        _parse(body, [])


@pytest.mark.parametrize(
    "records",
    [b"5 a=b", b"99 a=b\n", b"x a=b\n", b"6 ab\n\n"],
)
def test_malformed_pax_records_are_refused(records: bytes) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(records)
    body = info.tobuf(format=tarfile.USTAR_FORMAT) + records.ljust(512, b"\0") + bytes(1024)
    with pytest.raises(InvalidInput, match="pax"):
        _parse(body, [])


def test_a_global_header_may_not_rename_members() -> None:
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"path": "x"}
    ) as tar:
        tar.addfile(tarfile.TarInfo("a"), io.BytesIO(b""))
    with pytest.raises(InvalidInput, match="global"):
        _parse(out.getvalue(), [])
    comment = tar_of([])
    assert _parse(comment, []) == []


def test_a_pax_size_is_decimal() -> None:
    """A pax ``size`` record overrides the header's octal field, in decimal (11, not 9)."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    records = b"11 size=11\n"
    pax.size = len(records)
    member = tarfile.TarInfo("m")  # its own size field says 0
    data = b"eleven byte"
    body = (
        pax.tobuf(format=tarfile.USTAR_FORMAT)
        + records.ljust(512, b"\0")
        + member.tobuf(format=tarfile.USTAR_FORMAT)
        + data.ljust(512, b"\0")
        + bytes(1024)
    )
    assert _parse(body, [100]) == [("m", data)]
    bad = body.replace(b"11 size=11\n", b"11 size=1x\n")
    with pytest.raises(InvalidInput, match="pax size"):
        _parse(bad, [])


_names = st.text(
    st.characters(codec="utf-8", exclude_characters="\0/"), min_size=1, max_size=120
).filter(lambda n: n not in (".", ".."))


@settings(max_examples=150, deadline=None)
@given(
    members=st.lists(st.tuples(_names, st.binary(max_size=2000)), max_size=8),
    fmt=st.sampled_from([tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 14), max_size=6),
)
def test_what_tarfile_writes_is_read_back_however_split(
    members: list[tuple[str, bytes]], fmt: int, cuts: list[int]
) -> None:
    """Python's tarfile is the reference writer: every stream it makes, in any format
    and cut anywhere, gives its members back in order (or a clear refusal for a GNU
    long name, which the parser refuses by design)."""
    try:
        body = tar_of(members, fmt)
    except ValueError:  # a name this format cannot hold (ustar: too long or not ASCII)
        return
    bounds = sorted({min(c, len(body)) for c in cuts})
    pieces = [b - a for a, b in zip([0, *bounds], bounds, strict=False)]
    try:
        got = _parse(body, pieces, max_member=1 << 20, max_members=100)
    except InvalidInput as exc:
        assert fmt == tarfile.GNU_FORMAT and "GNU long name" in exc.detail
        return
    assert got == [(n, d) for n, d in members]


def _rechecksum(body: bytearray) -> None:
    """Fix the checksum of every 512-byte block that looks like a header, so that a
    mutation reaches the parser's field checks instead of stopping at the checksum."""
    for start in range(0, len(body) - 511, 512):
        block = body[start : start + 512]
        if block[257:262] == b"ustar":
            block[148:156] = b" " * 8
            block[148:156] = b"%06o\0 " % sum(block)
            body[start : start + 512] = block


@settings(max_examples=400, deadline=None)
@given(
    members=st.lists(st.tuples(st.sampled_from(["a", "b/c", "d" * 99]), st.binary(max_size=1500))),
    fmt=st.sampled_from([tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=12))),
    checksum=st.booleans(),
    piece=st.integers(min_value=1, max_value=700),
)
def test_damaged_streams_give_members_or_a_clear_refusal(
    members: list[tuple[str, bytes]],
    fmt: int,
    edits: list[tuple[int, bytes]],
    checksum: bool,
    piece: int,
) -> None:
    """A real tar with bytes overwritten anywhere (headers, sizes, pax records, the end
    marker), its checksums optionally fixed: the parser answers with members or
    InvalidInput / LimitExceeded, never another exception (the route's 500)."""
    body = bytearray(tar_of(members, fmt))
    for at, data in edits:
        pos = at % len(body)
        body[pos : pos + len(data)] = data[: len(body) - pos]
    if checksum:
        _rechecksum(body)
    try:
        got = _parse(bytes(body), [piece] * (len(body) // piece), max_member=1024, max_members=4)
    except (InvalidInput, LimitExceeded) as exc:
        assert exc.detail, "a refusal says why"
        return
    # What passes keeps within the limits the parser was given.
    assert len(got) <= 4 and all(len(data) <= 1024 for _, data in got)
