"""Small files of a batch go into one pack object; each is a span of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactstore.dataplane import blobs as blobs_mod
from artifactstore.dataplane import layout
from artifactstore.dataplane.blobs import (
    PACK_MAX_BLOB,
    DataPlane,
)
from artifactstore.errors import CorruptBlob
from artifactstore.model.identity import BlobDigests
from artifactstore.model.records import Placement
from tests.dataplane.conftest import Harness, data_of, ingest_file, read_all, reference


def _ingest_files(
    plane: DataPlane, tmp_path: Path, datas: list[bytes]
) -> list[tuple[BlobDigests, Placement]]:
    out = []
    with plane.batch() as batch:
        for i, data in enumerate(datas):
            path = tmp_path / f"f{i}"
            path.write_bytes(data)
            with path.open("rb", buffering=0) as src:
                out.append(ingest_file(batch, src))
    return out


def test_small_files_of_a_batch_share_one_pack(
    harness: Harness, plane: DataPlane, tmp_path: Path
) -> None:
    datas = [data_of(i, 1 + 997 * i) for i in range(40)]
    got = _ingest_files(plane, tmp_path, datas)
    packs = {place.key for _, place in got}
    assert len(packs) == 1 and harness.keys() == sorted(packs)
    (pack,) = packs
    assert pack.startswith(layout.PACK_PREFIX) and layout.digest_from_key(pack) is None
    assert plane.stat(pack) == sum(map(len, datas))
    for data, (digests, place) in zip(datas, got, strict=True):
        assert digests == reference(data) and place.representation == "packed"
        assert read_all(plane, place) == data
        plane.verify(place, digests)


def test_identical_content_is_packed_once(
    harness: Harness, plane: DataPlane, tmp_path: Path
) -> None:
    a, b = data_of(1, 300), data_of(2, 500)
    got = _ingest_files(plane, tmp_path, [a, b, a, b"", b""])
    assert got[0] == got[2] and got[3] == got[4]
    assert plane.stat(got[0][1].key) == len(a) + len(b)
    assert got[3][1].length == 0 and read_all(plane, got[3][1]) == b""


def test_the_pack_limit_decides_by_content(
    harness: Harness, plane: DataPlane, tmp_path: Path
) -> None:
    at, over = data_of(3, PACK_MAX_BLOB), data_of(4, PACK_MAX_BLOB + 1)
    (packed, whole) = _ingest_files(plane, tmp_path, [at, over])
    assert packed[1].representation == "packed"
    assert whole[1] == Placement(plane.key(whole[0]))
    assert read_all(plane, packed[1]) == at and read_all(plane, whole[1]) == over


def test_a_full_pack_is_sealed_and_another_started(
    harness: Harness, plane: DataPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs_mod, "PACK_TARGET", 2500)
    datas = [data_of(10 + i, 1000) for i in range(7)]
    got = _ingest_files(plane, tmp_path, datas)
    keys = [place.key for _, place in got]
    assert len(set(keys)) == 4  # 2 + 2 + 2 + 1 blobs of 1,000 bytes under 2,500
    assert [place.offset for _, place in got] == [0, 1000, 0, 1000, 0, 1000, 0]
    for data, (_d, place) in zip(datas, got, strict=True):
        assert read_all(plane, place) == data


def test_a_cancelled_batch_leaves_no_pack(
    harness: Harness, plane: DataPlane, tmp_path: Path
) -> None:
    class Boom(Exception):
        pass

    path = tmp_path / "small"
    path.write_bytes(b"small" * 100)
    with pytest.raises(Boom), plane.batch() as batch:
        with path.open("rb", buffering=0) as src:
            ingest_file(batch, src)
        raise Boom
    assert harness.keys() == []


def test_verify_names_the_damaged_span_only(
    harness: Harness, plane: DataPlane, tmp_path: Path
) -> None:
    datas = [data_of(20 + i, 700) for i in range(3)]
    got = _ingest_files(plane, tmp_path, datas)
    middle = got[1][1]
    assert middle.offset is not None
    harness.flip(middle.key, middle.offset + 699)
    plane.verify(got[0][1], got[0][0])
    plane.verify(got[2][1], got[2][0])
    with pytest.raises(CorruptBlob):
        plane.verify(middle, got[1][0])


def test_verify_catches_a_truncated_pack(
    harness: Harness, plane: DataPlane, tmp_path: Path
) -> None:
    ((digests, place),) = _ingest_files(plane, tmp_path, [data_of(30, 900)])
    wrong = Placement(place.key, 1, place.length)  # a span that runs past the end
    with pytest.raises(CorruptBlob):
        plane.verify(wrong, digests)


@given(
    offset=st.integers(0, 10**6),
    length=st.integers(0, 10**6),
    start=st.integers(0, 2 * 10**6),
    want=st.none() | st.integers(0, 2 * 10**6),
)
def test_a_span_never_leaves_its_blob(
    offset: int, length: int, start: int, want: int | None
) -> None:
    place = Placement("packs/ab/x", offset, length)
    first, n = place.span(start, want)
    assert n is not None and n >= 0
    if n:
        assert offset <= first and first + n <= offset + length
    assert n == max(0, min(length - start, length if want is None else want))
    assert Placement("blobs/k").span(start, want) == (start, want)
