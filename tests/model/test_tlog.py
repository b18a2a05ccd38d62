"""The log's proof values: their JSON forms round-trip, and anything else is refused with
InvalidInput (a hostile or damaged proof is a clear error, never a crash)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.errors import InvalidInput
from artifactstore.model.tlog import ConsistencyProof, InclusionProof, b64, entry_of, unb64

hashes = st.lists(st.binary(min_size=32, max_size=32), max_size=64).map(tuple)
sizes = st.integers(1, 2**63 - 1)


@given(index=st.integers(0, 2**63 - 1), size=sizes, path=hashes)
def test_inclusion_proofs_round_trip(index: int, size: int, path: tuple[bytes, ...]) -> None:
    proof = InclusionProof(index, size, path)
    assert InclusionProof.from_json(proof.to_json()) == proof


@given(old=sizes, new=sizes, path=hashes)
def test_consistency_proofs_round_trip(old: int, new: int, path: tuple[bytes, ...]) -> None:
    proof = ConsistencyProof(old, new, path)
    assert ConsistencyProof.from_json(proof.to_json()) == proof


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    value=json_values
    | st.fixed_dictionaries(
        {"leaf_index": json_values, "tree_size": json_values, "hashes": json_values}
    )
    | st.fixed_dictionaries(
        {"old_size": json_values, "new_size": json_values, "hashes": json_values}
    )
)
def test_anything_else_is_invalid_input(value: Any) -> None:
    """Refused with InvalidInput, or a proof that its own JSON form parses back to."""
    for parse in (InclusionProof.from_json, ConsistencyProof.from_json):
        try:
            proof = parse(value)
        except InvalidInput:
            continue
        assert parse(proof.to_json()) == proof


@pytest.mark.parametrize(
    "body",
    [
        {"leaf_index": -1, "tree_size": 1, "hashes": []},
        {"leaf_index": True, "tree_size": 1, "hashes": []},
        {"leaf_index": 0, "tree_size": 0, "hashes": []},
        {"leaf_index": 0, "tree_size": 2**64, "hashes": []},
        {"leaf_index": 0, "tree_size": 1, "hashes": ["AAAA"]},
        {"leaf_index": 0, "tree_size": 1, "hashes": [b64(bytes(32)).replace("=", "")]},
        {"leaf_index": 0, "tree_size": 1, "hashes": [b64(bytes(32))] * 129},
        {"leaf_index": 0, "tree_size": 1, "hashes": "nope"},
        {"leaf_index": 0, "tree_size": 1, "hashes": [], "extra": 1},
        [],
    ],
)
def test_malformed_inclusion_proofs(body: Any) -> None:
    with pytest.raises(InvalidInput):
        InclusionProof.from_json(body)


@given(st.binary(max_size=40))
def test_base64_is_canonical_or_refused(data: bytes) -> None:
    assert unb64(b64(data), "x", None) == data
    with pytest.raises(InvalidInput):
        unb64(b64(data) + "A", "x", None)


def test_entries_are_blake3_chain_hashes() -> None:
    assert entry_of("blake3:" + "ab" * 32) == bytes.fromhex("ab" * 32)
    for bad in ("sha256:" + "ab" * 32, "blake3:" + "AB" * 32, "blake3:" + "ab" * 31, "x"):
        with pytest.raises(InvalidInput):
            entry_of(bad)
