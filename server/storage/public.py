"""A table row as the schema clients see: the fields the two share by name, and the rest given."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def public(schema: type[M], row: object, **values: Any) -> M:
    """``schema`` validated from ``values`` and, for its other fields, ``row``'s attributes."""
    shared = {name: getattr(row, name) for name in schema.model_fields if name not in values}
    return schema.model_validate({**shared, **values})
