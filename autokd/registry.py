"""One generic registry used by every component family (models, losses, proxies, schemes, data, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError, UnknownNameError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Maps names to objects (classes or factory functions) plus free-form metadata.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("resnet8", family="resnet")
    ... def resnet8(**kw): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = (), **meta: Any) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__
            self.add(key, obj, aliases=aliases, **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, *, aliases: tuple[str, ...] = (), **meta: Any) -> None:
        if name in self._items or name in self._aliases:
            raise ConfigError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        self._meta[name] = dict(meta)
        for a in aliases:
            self._aliases[a] = name

    def canonical(self, name: str, where: str | None = None) -> str:
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise UnknownNameError(self.kind, name, self._items.keys(), where=where)

    def get(self, name: str, where: str | None = None) -> T:
        return self._items[self.canonical(name, where)]

    def meta(self, name: str) -> dict[str, Any]:
        return dict(self._meta[self.canonical(name)])

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        for k in self.names():
            yield k, self._items[k]

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
