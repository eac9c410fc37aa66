"""Objects that belong to one process: clients, connections and caches built after a fork.

Celery's prefork pool forks its children from the main process. A socket or a client
inherited across a fork is shared with the parent and breaks both, so every
per-process object lives in a :class:`ProcessLocal`, which a forked child sees empty.
"""
from __future__ import annotations

import os
from typing import Callable, Generic, Hashable, Iterator, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ProcessLocal(Generic[K, V]):
    """A mapping that starts empty in every process that reads it."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._items: dict[K, V] = {}

    def _mine(self) -> dict[K, V]:
        pid = os.getpid()
        if pid != self._pid:  # a forked child: what the parent built is not ours to use
            self._items = {}
            self._pid = pid
        return self._items

    def get(self, key: K) -> V | None:
        return self._mine().get(key)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The object ``make()`` built for ``key`` in this process."""
        items = self._mine()
        value = items.get(key)
        if value is None:
            value = items[key] = make()
        return value

    def set(self, key: K, value: V) -> None:
        self._mine()[key] = value

    def pop(self, key: K) -> V | None:
        return self._mine().pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._mine()

    def keys(self) -> list[K]:
        return list(self._mine())

    def values(self) -> Iterator[V]:
        return iter(list(self._mine().values()))

    def clear(self) -> None:
        self._mine().clear()
