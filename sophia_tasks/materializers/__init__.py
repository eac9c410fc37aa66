"""Materializer plugins, chosen by the endpoint name in the flow spec.

Like Redpanda Connect's plugin registry: each target is one module that registers
a factory under its name; the pipeline only knows ``write_batch(binding, documents)``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

from sophia_tasks.flowspec import Binding, FlowSpec
from sophia_tasks.settings import Settings


class TransientTargetError(RuntimeError):
    """The target could not be reached; the batch is retried whole, never split."""


@dataclass
class WriteResult:
    written: int = 0          # rows/keys created or replaced
    skipped_stale: int = 0    # an equal-or-newer version was already there
    failed: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (document, error)


class Materializer(Protocol):
    name: str

    def write_batch(self, binding: Binding, documents: list[dict[str, Any]]) -> WriteResult: ...

    def count(self, binding: Binding) -> int: ...

    def fetch(self, binding: Binding, key: str) -> dict[str, Any] | None: ...

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
_REGISTRY: dict[str, Factory] = {}
_instances: dict[tuple[int, str, int], Materializer] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return deco


def available() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    from sophia_tasks.materializers import postgres, redis, snowflake  # noqa: F401


def get_materializer(endpoint: str, settings: Settings, spec: FlowSpec) -> Materializer:
    """One instance per process and endpoint: connections survive between batches."""
    _load_builtins()
    key = (os.getpid(), endpoint, id(settings))
    inst = _instances.get(key)
    if inst is None:
        try:
            factory = _REGISTRY[endpoint]
        except KeyError:
            raise KeyError(f"no materializer named {endpoint!r}; available: {', '.join(sorted(_REGISTRY))}") from None
        inst = factory(settings, spec)
        _instances[key] = inst
    return inst


def reset_instances() -> None:
    for inst in list(_instances.values()):
        try:
            inst.close()
        except Exception:
            pass
    _instances.clear()
