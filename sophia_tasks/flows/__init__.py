"""The flow spec loader every process uses, and the shipped spec (``default.yaml``).

The spec's structure is parsed in ``sophia_tasks.core.flowspec``; each binding's resource is
checked by its materializer plugin (its name, resource checks and constructor are registered
together, ``sophia_tasks.materializers.base.register``), so a new target brings its own checks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.core.flowspec import load_spec as _load
from sophia_tasks.core.flowspec import parse_spec as _parse
from sophia_tasks.materializers import resource_checks

__all__ = ["SHIPPED_DIR", "load_spec", "parse_spec"]

#: Where the shipped spec and its JSON Schema files (``schemas/``) are.
SHIPPED_DIR = Path(__file__).resolve().parent


def load_spec(path: str | Path, check_imports: bool = True) -> FlowSpec:
    """The flow spec at ``path``, checked whole (FlowSpecError lists every problem)."""
    return _load(path, check_imports=check_imports, endpoints=resource_checks())


def parse_spec(data: Any, path: str = "<flow spec>", check_imports: bool = True,
               base_dir: str | Path | None = None) -> FlowSpec:
    """A spec already read (``data``). Its JSON Schema files are read relative to ``base_dir``, by default
    the shipped spec's directory, so the shipped spec's data (a copy, changed or not) parses anywhere."""
    return _parse(data, path, check_imports=check_imports, endpoints=resource_checks(),
                  base_dir=base_dir if base_dir is not None else SHIPPED_DIR)
