"""layout owns the key of a blob: blob_key and digest_from_key are inverses."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactstore.dataplane import layout
from artifactstore.model.identity import ALGORITHMS, Algorithm, Digest

hexes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
algorithms = st.sampled_from(ALGORITHMS)


@given(algorithm=algorithms, hex_=hexes)
def test_blob_key_round_trips(algorithm: Algorithm, hex_: str) -> None:
    digest = Digest(algorithm, hex_)
    key = layout.blob_key(digest)
    assert key == f"blobs/{algorithm}/{hex_[:2]}/{hex_}"
    assert key.startswith(layout.BLOB_PREFIX)
    assert layout.digest_from_key(key) == digest


@given(algorithm=algorithms, hex_=hexes, other=hexes)
def test_wrong_fan_out_is_not_a_blob_key(algorithm: Algorithm, hex_: str, other: str) -> None:
    key = f"blobs/{algorithm}/{other[:2]}/{hex_}"
    expected = Digest(algorithm, hex_) if other[:2] == hex_[:2] else None
    assert layout.digest_from_key(key) == expected


H = "ab" * 32


@pytest.mark.parametrize(
    "key",
    [
        "",
        "blobs",
        "blobs/",
        f"tmp/{H}",
        "blobs/blake3/ab",
        f"blobs/blake3/ab/{H}/",
        f"/blobs/blake3/ab/{H}",
        f"blobs/blake3/ab/{H}/extra",
        f"blobs/blake3/ab/ab/{H}",  # the two-level layout of earlier builds
        f"blobs/md5/ab/{H}",
        f"blobs/BLAKE3/ab/{H}",
        f"blobs/blake3/AB/{H.upper()}",
        f"blobs/blake3/ab/{H[:-1]}",
        f"blobs/blake3/ab/{H}0",
        f"blobs/blake3/ab/{H[:-1]}g",
        f"blobs/blake3:ab/{H}",
        f"blob/blake3/ab/{H}",
        f"blobs/blake3/ac/{H}",
        f"objects/blake3/ab/{H}",
    ],
)
def test_non_blob_keys_give_none(key: str) -> None:
    assert layout.digest_from_key(key) is None


def test_data_directory_paths() -> None:
    home = Path("/srv/artifacts")
    assert layout.database_path(home) == home / "artifactstore.db"
    assert layout.storage_root(home) == home / "storage"
