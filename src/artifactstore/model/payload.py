"""Reading logged event payloads with exact JSON types (a bool is not an int).

Shared by the event classes of ``blob_events.py`` and ``package_events.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "JsonObject",
    "mistyped",
    "read_int",
    "read_list",
    "read_number",
    "read_obj",
    "read_opt_int",
    "read_opt_obj",
    "read_opt_str",
    "read_str",
    "whole",
]

#: A JSON object as the log holds it (a manifest map, settings, a policy, a schema).
JsonObject = Mapping[str, Any]


# --- parsing helpers: exact JSON types (a bool is not an int) ---------------------------------
# A missing key raises KeyError, a mistyped value ValueError; parse_event reports either as
# ValueError. Written out per type, not one helper taking types: a replay parses every
# blob of every push, and these run about a dozen times per blob.


def mistyped(key: str, value: object, expected: str) -> ValueError:
    return ValueError(f"payload {key!r} is {type(value).__name__}, not {expected}")


def read_str(p: Mapping[str, Any], key: str) -> str:
    value = p[key]
    if type(value) is not str:
        raise mistyped(key, value, "str")
    return value


def read_opt_str(p: Mapping[str, Any], key: str) -> str | None:
    value = p[key]
    if value is not None and type(value) is not str:
        raise mistyped(key, value, "str or null")
    return value


def read_int(p: Mapping[str, Any], key: str) -> int:
    value = p[key]
    if type(value) is not int:
        raise mistyped(key, value, "int")
    return value


def read_opt_int(p: Mapping[str, Any], key: str) -> int | None:
    value = p[key]
    if value is not None and type(value) is not int:
        raise mistyped(key, value, "int or null")
    return value


def read_number(p: Mapping[str, Any], key: str) -> float:
    value = p[key]
    if type(value) is not int and type(value) is not float:
        raise mistyped(key, value, "int or float")
    return value


def read_obj(p: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = p[key]
    if type(value) is not dict:
        raise mistyped(key, value, "dict")
    return value


def read_opt_obj(p: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = p[key]
    if value is not None and type(value) is not dict:
        raise mistyped(key, value, "dict or null")
    return value


def read_list(p: Mapping[str, Any], key: str) -> list[Any]:
    value = p[key]
    if type(value) is not list:
        raise mistyped(key, value, "list")
    return value


def whole(days: float) -> int | float:
    """Whole days as an integer, so a payload reads as it was typed (``1``, not ``1.0``)."""
    return int(days) if float(days).is_integer() else days


# --- payload parts -------------------------------------------------------------------------
