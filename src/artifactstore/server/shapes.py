"""The OpenAPI response models of the model's value types, derived from their fields.

A value type with a derived JSON form (``model/jsonform.py``) declares its
shape once, as a dataclass; this turns it into the pydantic model FastAPI
documents, so the served schema and the JSON the route sends cannot drift.
"""

from __future__ import annotations

import functools
import types
from dataclasses import fields, is_dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, create_model

__all__ = ["items_of", "shape"]


@functools.cache
def shape(cls: type) -> type[BaseModel]:
    """The response model of dataclass ``cls``: its fields and its ``JSON_COMPUTED``."""
    hints = get_type_hints(cls)
    defs: dict[str, Any] = {f.name: (_schema_type(hints[f.name]), ...) for f in fields(cls)}
    for name in getattr(cls, "JSON_COMPUTED", ()):
        getter = getattr(cls, name).fget
        defs[name] = (_schema_type(get_type_hints(getter)["return"]), ...)
    model: type[BaseModel] = create_model(cls.__name__, **defs)
    return model


@functools.cache
def items_of(cls: type) -> type[BaseModel]:
    """``{"items": [...]}`` of ``cls``: the form of every listing."""
    item: Any = shape(cls)
    model: type[BaseModel] = create_model(f"{cls.__name__}List", items=(list[item], ...))
    return model


def _schema_type(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = tuple(_schema_type(a) for a in get_args(tp))
        return functools.reduce(lambda a, b: a | b, args)
    if origin in (list, tuple):
        return list[_schema_type(get_args(tp)[0])]  # type: ignore[misc]
    if is_dataclass(tp) and isinstance(tp, type):
        return shape(tp)
    return tp
