"""Deterministic CBOR (RFC 8949 section 4.2.1), the byte form that is hashed and signed.

A manifest's digest is the hash of its CBOR bytes, so one value must have
exactly one encoding and one encoding exactly one value. ``canonical_dumps``
produces the core deterministic encoding; ``strict_loads`` accepts only bytes
that are already in that form, so the bytes a client signed are the bytes we
hash and no document parses two ways.

Encoding is delegated to ``cbor2.dumps(obj, canonical=True)``, which gives
shortest-form integers and lengths, definite lengths and the shortest float
that preserves the value. Its map-key order is *length-first* (the old RFC
7049 "canonical" rule: shorter encoded key first, then bytewise), not the
RFC 8949 bytewise order: ``{100: 0, -1: 0}`` comes out as ``-1, 100`` where
RFC 8949 wants ``100, -1``. That difference cannot reach us because we allow
text keys only: every encoded text key starts with a head of major type 3
whose bytes grow with the UTF-8 length (``0x60+n``, then ``0x78 n``, ``0x79
nn``, ...), so a shorter key always has the bytewise smaller head and, for
equal lengths, both rules compare the same UTF-8 bytes. For text keys the
two orders coincide, and a test pins it.

Decoding first walks the item heads itself (``_check_structure``): tags,
indefinite lengths, non-shortest heads, unassigned simple values, truncation,
trailing bytes and excess depth are refused there with a precise reason and
before ``cbor2`` allocates anything. What is left (key order, float width) is
caught by re-encoding and comparing bytes. Size limits belong to the caller.
"""

from __future__ import annotations

import math
from typing import Any, Final

import cbor2

from artifactstore.errors import InvalidManifest

__all__ = ["INT_MAX", "INT_MIN", "canonical_dumps", "dumps_validated", "strict_loads"]

INT_MIN: Final = -(2**63)
"""Smallest integer we encode (an OCI/SQL ``int64`` can hold every value we accept)."""
INT_MAX: Final = 2**64 - 1
"""Largest integer we encode: the largest CBOR major-type-0 argument, so no bignum tags."""

# Smallest argument that may use each head width (additional info 24..27).
_SHORTEST: Final = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x1_0000_0000}
_FALSE, _TRUE, _NULL = 20, 21, 22


def _where(path: str) -> str:
    return path[:200] or "the top level"


class _Refused(Exception):
    """A value outside the data model; the path to it is collected on the way out."""

    def __init__(self, message: str) -> None:
        self.message = message  # "{at}" stands for the path
        self.steps: list[str | int] = []  # innermost first

    def where(self) -> str:
        path = ""
        for step in reversed(self.steps):
            if isinstance(step, int):
                path = f"{path}[{step}]"
            else:
                path = f"{path}.{step}" if path else step
        return _where(path)


def _check_value(value: Any) -> None:
    """Refuse any value outside the allowed data model (raises _Refused).

    Paths are built only for a refusal: a 10,000-file manifest is checked on
    every encoding, and formatting a path per element cost more than the check.
    """
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is bytes:
        return
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise _Refused(f"integer at {{at}} is outside [-2**63, 2**64-1]: {str(value)[:40]}")
    elif kind is float:
        if not math.isfinite(value):
            raise _Refused("NaN and infinity are not allowed (at {at})")
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise _Refused(f"map keys must be text, got {type(key).__name__} at {{at}}")
            if type(item) is str:  # most leaves: no call for them
                continue
            try:
                _check_value(item)
            except _Refused as refused:
                refused.steps.append(key)
                raise
    elif kind is list or kind is tuple:
        for index, item in enumerate(value):
            if type(item) is str:
                continue
            try:
                _check_value(item)
            except _Refused as refused:
                refused.steps.append(index)
                raise
    else:
        raise _Refused(f"type {kind.__name__} is not allowed (at {{at}})")


def canonical_dumps(obj: object) -> bytes:
    """Encode ``obj`` in RFC 8949 core deterministic form.

    Allowed: ``dict`` with ``str`` keys, ``list``/``tuple``, ``str``, ``bytes``,
    ``int`` in ``[-2**63, 2**64-1]``, finite ``float``, ``bool``, ``None``
    (exact types, not subclasses, so nothing encodes differently than it
    looks). Anything else raises :class:`InvalidManifest`.
    """
    try:
        _check_value(obj)
        return cbor2.dumps(obj, canonical=True)
    except _Refused as refused:
        raise InvalidManifest(refused.message.replace("{at}", refused.where())) from None
    except RecursionError:
        raise InvalidManifest("value nests too deeply (or refers to itself)") from None
    except (cbor2.CBORError, UnicodeError) as exc:
        # Lone surrogates in text are the only way left to fail: they have no UTF-8 form.
        raise InvalidManifest(f"value cannot be encoded as CBOR: {exc}") from None


def dumps_validated(obj: object) -> bytes:
    """:func:`canonical_dumps` of a value the model already validated (a
    manifest's map): the same bytes, without the pass over every element that
    cost a 10,000-file push a tenth of a second per encoding."""
    return cbor2.dumps(obj, canonical=True)


def _check_structure(data: bytes, max_depth: int) -> None:
    """Walk the item heads once and refuse what deterministic CBOR never contains."""
    end = len(data)
    pos = 0
    open_items: list[int] = []  # items still expected by each open array or map
    while True:
        if pos >= end:
            raise InvalidManifest("CBOR input is truncated" if data else "CBOR input is empty")
        initial = data[pos]
        pos += 1
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            arg = info
        elif info < 28:
            width = 1 << (info - 24)
            if pos + width > end:
                raise InvalidManifest("CBOR input is truncated")
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
            if major != 7 and arg < _SHORTEST[info]:
                raise InvalidManifest(
                    f"CBOR is not in deterministic form: argument {arg} at byte {pos - width - 1} "
                    "is not in its shortest encoding"
                )
        elif info == 31:
            raise InvalidManifest(
                f"CBOR indefinite-length items (or a stray break) are not allowed (byte {pos - 1})"
            )
        else:
            raise InvalidManifest(f"CBOR uses reserved additional information at byte {pos - 1}")

        children = 0
        if major == 6:
            raise InvalidManifest(f"CBOR tags are not allowed (tag {arg} at byte {pos - 1})")
        if major in (2, 3):
            if arg > end - pos:
                raise InvalidManifest("CBOR input is truncated")
            pos += arg
        elif major in (4, 5):
            children = arg if major == 4 else 2 * arg
            if children > end - pos:  # every child needs at least one byte
                raise InvalidManifest("CBOR input is truncated")
            if len(open_items) >= max_depth:
                raise InvalidManifest(f"CBOR nests deeper than {max_depth} levels")
        elif major == 7 and info <= 24 and info not in (_FALSE, _TRUE, _NULL):
            # 0..19 and 23 (undefined) are unassigned here; 24 is a one-byte simple value.
            raise InvalidManifest(f"CBOR simple value {arg} is not allowed (byte {pos - 1})")

        if children:
            open_items.append(children)
            continue
        # One item is complete; it may complete the containers around it.
        while open_items:
            open_items[-1] -= 1
            if open_items[-1]:
                break
            open_items.pop()
        if not open_items:
            break
    if pos != end:
        raise InvalidManifest(f"CBOR input has {end - pos} trailing bytes after the first item")


def strict_loads(data: bytes, *, max_depth: int = 32) -> object:
    """Decode ``data`` only if it is exactly the deterministic encoding of an allowed value.

    Refused with :class:`InvalidManifest`: malformed or truncated input,
    trailing bytes, tags, indefinite lengths, simple values other than
    false/true/null, duplicate or non-text map keys, NaN/infinity, integers
    out of range, nesting deeper than ``max_depth`` (the top-level container
    is depth 1), and anything that is not byte-for-byte what
    :func:`canonical_dumps` produces for the decoded value. No ``cbor2``
    exception, ``RecursionError`` or ``MemoryError`` escapes.
    """
    data = bytes(data)
    _check_structure(data, max_depth)
    try:
        value = cbor2.loads(
            data,
            max_depth=max_depth + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except (cbor2.CBORError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise InvalidManifest(f"invalid CBOR: {exc}") from None
    if canonical_dumps(value) != data:
        raise InvalidManifest(
            "CBOR is not in deterministic form (RFC 8949 section 4.2.1): map keys must be "
            "sorted bytewise and floats use their shortest exact width"
        )
    return value
