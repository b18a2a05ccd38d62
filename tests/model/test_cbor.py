"""Deterministic CBOR: stable bytes, exact round trips, and refusal of every other encoding."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactstore.errors import InvalidManifest
from artifactstore.model.cbor import canonical_dumps, dumps_validated, strict_loads

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
maps = st.dictionaries(st.text(max_size=12), values, min_size=2, max_size=6)


def _head(major: int, argument: int) -> bytes:
    """The shortest head for a major type and argument (independent of cbor2)."""
    if argument < 24:
        return bytes([major << 5 | argument])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * width):
            return bytes([major << 5 | info]) + argument.to_bytes(width, "big")
    raise AssertionError(argument)


def _reinsert(value: object) -> object:
    """The same value with every map's keys inserted in reverse order."""
    if isinstance(value, dict):
        return {k: _reinsert(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reinsert(v) for v in value]
    return value


# --- properties -------------------------------------------------------------------------


@given(values)
def test_bytes_are_stable_and_independent_of_insertion_order(value: object) -> None:
    encoded = canonical_dumps(value)
    assert canonical_dumps(value) == encoded
    assert canonical_dumps(_reinsert(value)) == encoded


@given(values)
def test_encoding_a_validated_value_gives_the_same_bytes(value: object) -> None:
    assert dumps_validated(value) == canonical_dumps(value)


@given(values)
def test_round_trips_through_strict_loads(value: object) -> None:
    encoded = canonical_dumps(value)
    decoded = strict_loads(encoded)
    assert decoded == value
    assert canonical_dumps(decoded) == encoded


@given(st.dictionaries(st.text(max_size=40), st.none(), max_size=12))
def test_text_key_order_is_rfc8949_bytewise(value: dict[str, None]) -> None:
    decoded = strict_loads(canonical_dumps(value))
    assert isinstance(decoded, dict)
    bytewise = sorted(value, key=cbor2.dumps)
    length_first = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
    assert list(decoded) == bytewise == length_first


def test_cbor2_is_length_first_for_mixed_keys_which_is_why_we_allow_text_keys_only() -> None:
    # RFC 8949 bytewise order would put 100 (0x1864) before -1 (0x20).
    assert list(cbor2.loads(cbor2.dumps({100: 0, -1: 0}, canonical=True))) == [-1, 100]
    with pytest.raises(InvalidManifest, match="map keys must be text"):
        canonical_dumps({1: 0})


@given(maps)
def test_reordered_map_is_refused(value: dict[str, object]) -> None:
    pairs = sorted(
        (canonical_dumps(k), canonical_dumps(v)) for k, v in value.items()
    )  # bytewise order is the deterministic order
    good = _head(5, len(pairs)) + b"".join(k + v for k, v in pairs)
    assert good == canonical_dumps(value)
    bad = _head(5, len(pairs)) + b"".join(k + v for k, v in reversed(pairs))
    with pytest.raises(InvalidManifest, match="deterministic"):
        strict_loads(bad)


@given(st.integers(min_value=0, max_value=2**32 - 1), st.sampled_from([0, 1]))
def test_non_shortest_integer_is_refused(number: int, major: int) -> None:
    long_form = bytes([major << 5 | 27]) + number.to_bytes(8, "big")
    with pytest.raises(InvalidManifest, match="shortest"):
        strict_loads(long_form)
    with pytest.raises(InvalidManifest, match="shortest"):
        strict_loads(b"\x81" + long_form)  # also inside an array


@given(st.text(min_size=0, max_size=20))
def test_non_shortest_length_is_refused(text: str) -> None:
    raw = text.encode()
    with pytest.raises(InvalidManifest, match="shortest"):
        strict_loads(b"\x7a" + len(raw).to_bytes(4, "big") + raw)


@given(values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_refused(value: object, extra: bytes) -> None:
    with pytest.raises(InvalidManifest, match="trailing"):
        strict_loads(canonical_dumps(value) + extra)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_invalid_manifest_only(data: bytes) -> None:
    try:
        value = strict_loads(data)
    except InvalidManifest:
        return
    assert canonical_dumps(value) == data


# --- hand-built bad encodings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_bytes", "reason"),
    [
        ("9f01ff", "indefinite"),  # [_ 1]
        ("5f4101ff", "indefinite"),  # (_ h'01')
        ("7f6161ff", "indefinite"),  # (_ "a")
        ("bf616101ff", "indefinite"),  # {_ "a": 1}
        ("ff", "indefinite-length items .or a stray break"),
        ("a2616101616102", "(?i)duplicate map key"),  # {"a": 1, "a": 2}
        ("c11a514b67b0", "tag 1"),  # epoch date/time
        ("c2410a", "tag 2"),  # bignum 10
        ("d9d9f701", "tag 55799"),  # self-described CBOR
        ("d81c81d81d00", "tag 28"),  # shared reference cycle
        ("a10100", "map key must be a text"),  # {1: 0}
        ("a1410100", "map keys must be text"),  # {h'01': 0}
        ("f7", "simple value 23"),  # undefined
        ("f0", "simple value 16"),
        ("f814", "simple value 20"),  # false in the two-byte form
        ("fb7ff8000000000000", "NaN"),
        ("f97c00", "NaN and infinity"),
        ("3bffffffffffffffff", "outside"),  # -2**64
        ("fb3ff8000000000000", "deterministic"),  # 1.5 as a double
        ("a2616201616102", "deterministic"),  # {"b": 1, "a": 2}
        ("1c", "reserved"),
        ("62c328", "invalid CBOR"),  # invalid UTF-8 text
        ("", "empty"),
        ("82", "truncated"),
        ("9bffffffffffffffff", "truncated"),  # claims 2**64-1 items
        ("5bffffffffffffffff00", "truncated"),  # claims 2**64-1 bytes
        ("7a7fffffff", "truncated"),
        ("1b0000", "truncated"),
        ("0100", "trailing"),
    ],
)
def test_hand_built_bad_encodings_are_refused(hex_bytes: str, reason: str) -> None:
    with pytest.raises(InvalidManifest, match=reason):
        strict_loads(bytes.fromhex(hex_bytes))


def test_depth_limit_counts_every_container() -> None:
    assert strict_loads(b"\x81" * 32 + b"\x00") is not None  # 32 arrays deep
    assert strict_loads(b"\x81" * 31 + b"\x80") is not None  # 32 deep, innermost empty
    with pytest.raises(InvalidManifest, match="deeper than 32"):
        strict_loads(b"\x81" * 32 + b"\x80")  # the empty innermost array is level 33
    with pytest.raises(InvalidManifest, match="deeper than 32"):
        strict_loads(b"\xa1\x61a" * 33 + b"\x00")
    with pytest.raises(InvalidManifest, match="deeper than 3"):
        strict_loads(b"\x81\x81\x81\x81\x00", max_depth=3)


def test_hostile_nesting_raises_invalid_manifest_not_recursion_error() -> None:
    with pytest.raises(InvalidManifest):
        strict_loads(b"\x81" * 200_000 + b"\x00", max_depth=1_000_000)
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(InvalidManifest):
        canonical_dumps(nested)


def test_non_canonical_cbor2_output_is_refused() -> None:
    value = {"schema": 1, "files": [1.5, 2], "a": {"zz": 1, "b": 2}}
    with pytest.raises(InvalidManifest, match="deterministic"):
        strict_loads(cbor2.dumps(value))  # insertion order, not sorted
    assert strict_loads(cbor2.dumps(value, canonical=True)) == value


# --- what canonical_dumps refuses ----------------------------------------------------------


class _Str(str):
    pass


def _cyclic() -> list[object]:
    cycle: list[object] = []
    cycle.append(cycle)
    return cycle


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        2**64,
        -(2**63) - 1,
        {1, 2},
        {"a": {b"k": 1}},
        {("t",): 1},
        object(),
        _Str("x"),
        "\ud800",
        {"\udfff": 1},
        bytearray(b"x"),
        _cyclic(),
    ],
)
def test_canonical_dumps_refuses_values_outside_the_model(value: object) -> None:
    with pytest.raises(InvalidManifest):
        canonical_dumps(value)


def test_tuples_encode_as_arrays() -> None:
    assert canonical_dumps((1, (2, 3))) == canonical_dumps([1, [2, 3]])


# --- RFC 8949 Appendix A -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hex_bytes"),
    [
        (0, "00"),
        (1, "01"),
        (10, "0a"),
        (23, "17"),
        (24, "1818"),
        (25, "1819"),
        (100, "1864"),
        (1000, "1903e8"),
        (1000000, "1a000f4240"),
        (1000000000000, "1b000000e8d4a51000"),
        (18446744073709551615, "1bffffffffffffffff"),
        (-1, "20"),
        (-10, "29"),
        (-100, "3863"),
        (-1000, "3903e7"),
        (0.0, "f90000"),
        (-0.0, "f98000"),
        (1.0, "f93c00"),
        (1.1, "fb3ff199999999999a"),
        (1.5, "f93e00"),
        (65504.0, "f97bff"),
        (100000.0, "fa47c35000"),
        (3.4028234663852886e38, "fa7f7fffff"),
        (1.0e300, "fb7e37e43c8800759c"),
        (5.960464477539063e-8, "f90001"),
        (0.00006103515625, "f90400"),
        (-4.0, "f9c400"),
        (-4.1, "fbc010666666666666"),
        (False, "f4"),
        (True, "f5"),
        (None, "f6"),
        (b"", "40"),
        (b"\x01\x02\x03\x04", "4401020304"),
        ("", "60"),
        ("a", "6161"),
        ("IETF", "6449455446"),
        ('"\\', "62225c"),
        ("\u00fc", "62c3bc"),
        ("\u6c34", "63e6b0b4"),
        ("\U00010151", "64f0908591"),
        ([], "80"),
        ([1, 2, 3], "83010203"),
        ([1, [2, 3], [4, 5]], "8301820203820405"),
        (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
        ({}, "a0"),
        ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
        (["a", {"b": "c"}], "826161a161626163"),
        (
            {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
            "a56161614161626142616361436164614461656145",
        ),
    ],
)
def test_rfc8949_appendix_a_vectors(value: object, hex_bytes: str) -> None:
    assert canonical_dumps(value).hex() == hex_bytes
    assert strict_loads(bytes.fromhex(hex_bytes)) == value
