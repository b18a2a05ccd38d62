"""The JSON form of a plain value type, derived from its dataclass fields.

A value type whose JSON is its fields (plus the read-only properties it names
in ``JSON_COMPUTED``) writes its shape once, as the dataclass: :func:`to_json`
renders it, :func:`from_json` parses it back (computed names are skipped),
and the server derives its OpenAPI response model from the same fields
(``server/shapes.py``). Field types are JSON values, tuples (rendered as
lists), optional values, and lists of such dataclasses.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = ["from_json", "to_json"]

T = TypeVar("T")


def to_json(value: Any) -> Any:
    """``value`` as JSON values: dataclasses as objects, tuples as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
        for name in getattr(type(value), "JSON_COMPUTED", ()):
            out[name] = to_json(getattr(value, name))
        return out
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[T], body: Mapping[str, Any]) -> T:
    """Parse the JSON form of dataclass ``cls`` (absent fields take their defaults)."""
    hints = get_type_hints(cls)
    kwargs = {f.name: _parse(hints[f.name], body[f.name]) for f in fields(cls) if f.name in body}  # type: ignore[arg-type]
    return cls(**kwargs)


def _parse(tp: Any, value: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in get_args(tp) if a is not type(None)][:1]
        return _parse(inner, value)
    if origin in (list, tuple):
        item = get_args(tp)[0]
        return origin(_parse(item, v) for v in value)
    if is_dataclass(tp) and isinstance(tp, type):
        return from_json(tp, value)
    return value
