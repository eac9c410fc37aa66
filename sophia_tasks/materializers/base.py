"""What every materializer plugin shares: the interface, the result, the registry, write deadlines.

Plugins import this module, never the package, so the package can load its plugins eagerly.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

from sophia_tasks.core.flowspec import Binding, FlowSpec, ResourceCheck
from sophia_tasks.settings import Settings


class TransientTargetError(RuntimeError):
    """The target could not be reached; the batch is retried whole, never split."""


@dataclass
class WriteResult:
    written: int = 0          # rows/keys created or replaced
    skipped_stale: int = 0    # an equal-or-newer version was already there
    failed: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (document, error): a retry may help
    keyless: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # no usable key: no retry can help

    @property
    def rejected(self) -> list[tuple[dict[str, Any], str]]:
        """Every document not written, whatever the reason."""
        return self.keyless + self.failed


class Materializer(Protocol):
    name: str

    def write_batch(self, binding: Binding, documents: list[dict[str, Any]]) -> WriteResult: ...

    def count(self, binding: Binding) -> int: ...

    def fetch(self, binding: Binding, key: str) -> dict[str, Any] | None: ...

    # Erasure (``sophia-tasks erase``): hard deletes whatever the binding's soft-delete setting.
    def erase(self, binding: Binding, keys: list[str]) -> int:
        """Delete these keys (any version, tombstones too); answers how many were there."""
        ...

    def count_keys(self, binding: Binding, keys: list[str]) -> int:
        """How many of these keys the binding holds (what ``erase`` would delete: the dry run)."""
        ...

    def search(self, binding: Binding, address: str) -> list[str]:
        """Keys of the stored documents that name ``address`` (``core.addresses`` rules)."""
        ...

    def close(self) -> None: ...


_deadline: ContextVar[float | None] = ContextVar("sophia_write_deadline", default=None)


@contextmanager
def write_deadline(seconds: float) -> Iterator[None]:
    """Writes inside give up (with a transient error) after about ``seconds`` waiting on a target.

    Why: the validate task writes some targets itself (``SOPHIA_INLINE_TARGETS``); a locked
    table or a hung server must cost it seconds, then the batch goes to the target's queue,
    whose writes keep their long limits.
    """
    token = _deadline.set(seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline() -> float | None:
    """The current write deadline in seconds (None: the target's own limits)."""
    return _deadline.get()


Factory = Callable[[Settings, FlowSpec], Materializer]


@dataclass(frozen=True)
class Plugin:
    """A materializer as the registry knows it: its endpoint name, its resource checks (run when a
    flow spec is loaded) and its constructor, registered together as in Redpanda Connect."""

    name: str
    check: ResourceCheck
    factory: Factory


_REGISTRY: dict[str, Plugin] = {}


def register(name: str, check: ResourceCheck) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        _REGISTRY[name] = Plugin(name, check, factory)
        return factory

    return deco
