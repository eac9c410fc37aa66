"""Materializer plugins, chosen by the endpoint name in the flow spec.

Like Redpanda Connect's plugin registry: each target is one module that registers
a factory under its name (``base.register``); the pipeline only knows
``write_batch(binding, documents)``. Importing this package loads the built-in plugins.
"""
from __future__ import annotations

from sophia_tasks.core.flowspec import FlowSpec, ResourceCheck
from sophia_tasks.core.process import ProcessLocal
from sophia_tasks.materializers import postgres, redis, snowflake  # noqa: F401  (they register themselves)
from sophia_tasks.materializers.base import (
    _REGISTRY,
    Materializer,
    TransientTargetError,
    WriteResult,
    deadline,
    register,
    write_deadline,
)
from sophia_tasks.materializers.schema import BindingPaused
from sophia_tasks.settings import Settings

__all__ = ["BindingPaused",
           "Materializer", "TransientTargetError", "WriteResult", "available", "deadline", "get_materializer",
           "register", "reset_instances", "resource_checks", "write_deadline"]

_instances: ProcessLocal[tuple[str, int], Materializer] = ProcessLocal()


def available() -> list[str]:
    return sorted(_REGISTRY)


def resource_checks() -> dict[str, ResourceCheck]:
    """Each endpoint's resource checks, for the flow spec loader (``sophia_tasks.flows``)."""
    return {name: plugin.check for name, plugin in _REGISTRY.items()}


def get_materializer(endpoint: str, settings: Settings, spec: FlowSpec) -> Materializer:
    """One instance per process and endpoint: connections survive between batches."""
    key = (endpoint, id(settings))
    inst = _instances.get(key)
    if inst is None:
        try:
            factory = _REGISTRY[endpoint].factory
        except KeyError:
            raise KeyError(f"no materializer named {endpoint!r}; available: {', '.join(sorted(_REGISTRY))}") from None
        inst = factory(settings, spec)
        _instances.set(key, inst)
    return inst


def reset_instances() -> None:
    for inst in list(_instances.values()):
        try:
            inst.close()
        except Exception:
            pass
    _instances.clear()
