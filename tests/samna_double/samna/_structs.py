"""Strict plain-data objects, like samna's bound C++ structs: unknown attributes and values of
the wrong type are refused, so a driver that writes a field samna does not have fails here too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar


def _check(owner: str, name: str, kind: Any, value: Any) -> None:
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is list:
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise TypeError(f"{owner}.{name} takes {getattr(kind, '__name__', kind)}, got {value!r}")


Fields = dict[str, tuple[Any, Callable[[], Any]]]


class Struct:
    """Subclasses declare ``FIELDS = {name: (type, default_factory)}``."""

    FIELDS: ClassVar[Fields] = {}
    __slots__ = ("_values",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_values", {n: make() for n, (_, make) in self.FIELDS.items()})
        names = list(self.FIELDS)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} arguments")
        for name, value in [*zip(names, args, strict=False), *kwargs.items()]:
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.FIELDS:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        kind = self.FIELDS[name][0]
        _check(type(self).__name__, name, kind, value)
        self._values[name] = value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values == self._values  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"{type(self).__name__}({inner})"
