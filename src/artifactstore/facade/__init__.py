"""The Store's verbs, one module per service: the facade split by what each group does.

Each class here is a mixin of :class:`artifactstore.store.Store` whose methods
only delegate to one service of ``services/``. They see the store through
:class:`Facade` (its ``services`` and its default ``actor``) and import the
services for typing only, so loading the facade loads no SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from artifactstore.model.identity import Reference

if TYPE_CHECKING:
    from artifactstore.services import Services

__all__ = ["Facade", "as_reference"]


class Facade(Protocol):
    """What a verb needs of the store it is part of."""

    @property
    def services(self) -> Services: ...

    @property
    def actor(self) -> str: ...


def as_reference(ref: str | Reference) -> Reference:
    return Reference.parse(ref) if isinstance(ref, str) else ref
