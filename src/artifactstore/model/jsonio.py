"""Strict JSON in, canonical JSON out.

JSON is an accepted rendering of the manifest map (docs/architecture.md, the manifest), so it must
never parse two ways: the standard library silently keeps the last of two
duplicate keys, accepts ``NaN``/``Infinity`` and turns ``1e400`` into
infinity. ``strict_json_loads`` refuses all of that, plus invalid UTF-8,
unpaired surrogate escapes (text with no UTF-8 form) and excess depth.

``canonical_json_dumps`` is one fixed rendering (sorted keys, no whitespace,
UTF-8 text) so equal values render to equal strings. It is for renderings
and the OCI config blob; the hashed form of a manifest is CBOR, not this.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from artifactstore.errors import InvalidInput, InvalidManifest, LimitExceeded

__all__ = ["canonical_json_dumps", "check_metadata_limits", "strict_json_loads"]

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class _Refused(Exception):
    """Raised inside json.loads hooks; turned into the caller's error class."""


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"JSON object has a duplicate key {key[:200]!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> object:
    raise _Refused(f"JSON constant {name} is not allowed")


def _enter(depth: int, max_depth: int | None) -> None:
    if max_depth is not None and depth >= max_depth:
        raise _Refused(f"JSON nests deeper than {max_depth} levels")


def _check(value: object, depth: int, max_depth: int | None) -> None:
    """Refuse what JSON cannot carry faithfully: non-finite floats, bad text, foreign types."""
    if value is None or type(value) in (bool, int):
        return
    if type(value) is str:
        if _SURROGATE.search(value):
            raise _Refused("JSON text contains an unpaired surrogate (not valid Unicode)")
    elif type(value) is float:
        if not math.isfinite(value):
            raise _Refused("JSON numbers must be finite")
    elif type(value) is dict:
        _enter(depth, max_depth)
        for key, item in value.items():
            if type(key) is not str:
                raise _Refused(f"JSON object keys must be strings, got {type(key).__name__}")
            _check(key, depth + 1, max_depth)
            _check(item, depth + 1, max_depth)
    elif type(value) is list or type(value) is tuple:
        _enter(depth, max_depth)
        for item in value:
            _check(item, depth + 1, max_depth)
    else:
        raise _Refused(f"type {type(value).__name__} cannot be rendered as JSON")


def strict_json_loads(
    data: bytes | str,
    *,
    max_depth: int = 32,
    error: type[InvalidInput] = InvalidManifest,
) -> object:
    """Parse one JSON document, refusing anything that could be read two ways.

    ``max_depth`` counts containers (the top-level object is depth 1).
    Every refusal raises ``error`` (default :class:`InvalidManifest`) with a
    detail saying why; no ``json``, ``UnicodeDecodeError`` or
    ``RecursionError`` escapes.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"JSON is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    else:
        text = data
    try:
        value = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
        _check(value, 0, max_depth)
    except _Refused as exc:
        raise error(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise error(f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise error(f"JSON nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # e.g. an integer with more digits than int() accepts
        raise error(f"invalid JSON: {exc}") from None
    return value


def canonical_json_dumps(obj: object, *, error: type[InvalidInput] = InvalidManifest) -> str:
    """Render ``obj`` as compact JSON with sorted keys and literal (non-escaped) Unicode.

    Keys sort by code point, which for valid Unicode is also UTF-8 byte order.
    Only JSON types are accepted (``dict`` with ``str`` keys, ``list``/``tuple``,
    ``str``, ``int``, finite ``float``, ``bool``, ``None``); anything else
    raises ``error``.
    """
    try:
        _check(obj, 0, None)
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except _Refused as exc:
        raise error(str(exc)) from None
    except RecursionError:
        raise error("value nests too deeply (or refers to itself)") from None
    except ValueError as exc:  # e.g. an integer with more digits than str() allows
        raise error(f"value cannot be rendered as JSON: {exc}") from None


def check_metadata_limits(metadata: Mapping[str, Any], max_bytes: int, max_depth: int) -> None:
    """Refuse metadata larger than ``max_bytes`` as canonical JSON or nested deeper than
    ``max_depth`` (docs/configuration.md): LimitExceeded. Pure, so a push checks before hashing."""
    size = len(canonical_json_dumps(dict(metadata)).encode())
    if size > max_bytes:
        raise LimitExceeded(f"metadata is {size} bytes, over the limit of {max_bytes}")
    if _depth(metadata) > max_depth:
        raise LimitExceeded(f"metadata nests deeper than {max_depth} levels")


def _depth(value: object, level: int = 0) -> int:
    if isinstance(value, Mapping):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list | tuple):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level
