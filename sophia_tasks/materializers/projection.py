"""Projected columns: typed values pulled from a document by JSON pointer.

A value that does not fit its column's type becomes NULL rather than failing the
batch: the whole document is still in ``flow_document``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Iterable

from sophia_tasks.core.documents import format_version, parse_time
from sophia_tasks.core.flowspec import SQL_IDENT, Binding, FlowSpec, Projection, resolve_pointer

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def coerce(value: Any, ptype: str) -> Any:
    if value is None:
        return None
    if ptype == "string":
        if isinstance(value, (dict, list)):
            return None
        return str(value)
    if ptype == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value if _INT_MIN <= value <= _INT_MAX else None
        if isinstance(value, float) and math.isfinite(value):
            return int(value) if _INT_MIN <= value <= _INT_MAX else None
        return None
    if ptype == "number":
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            f = float(value)
            return f if math.isfinite(f) else None
        return None
    if ptype == "boolean":
        return value if isinstance(value, bool) else None
    if ptype == "timestamp":
        moment = parse_time(value) if isinstance(value, str) else None
        if moment is None or not (1 <= moment.year <= 9999):
            return None
        return format_version(moment)
    if ptype == "object":
        return value
    return None


def project(document: dict[str, Any], projections: Iterable[Projection]) -> list[Any]:
    return [coerce(resolve_pointer(document, p.pointer), p.type) for p in projections]


def keyed(spec: FlowSpec, binding: Binding, documents: list[dict[str, Any]]
          ) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[dict[str, Any], str]]]:
    """Split a batch into (key, document) pairs and documents without a usable key."""
    source = spec.collection(binding.source)
    key_of = source.key_of
    ok: list[tuple[str, dict[str, Any]]] = []
    bad: list[tuple[dict[str, Any], str]] = []
    for doc in documents:
        key = key_of(doc)
        if key is None:
            bad.append((doc, f"document has no key at {source.key}"))
        else:
            ok.append((key, doc))
    return ok, bad


def check_table_resource(resource: Mapping[str, Any], source: str, projections: tuple[Projection, ...],
                         where: str) -> list[str]:
    """The resource checks of a SQL table binding (PostgreSQL, Snowflake)."""
    problems = []
    table = resource.get("table")
    if not isinstance(table, str) or not SQL_IDENT.match(table):
        problems.append(f"{where}.table: required, letters, digits and underscores (max 63)")
    kc = resource.get("key_column", "key")
    if not isinstance(kc, str) or not SQL_IDENT.match(kc):
        problems.append(f"{where}.key_column: letters, digits and underscores (max 63)")
    rd = resource.get("retention_days")
    if rd is not None and (not isinstance(rd, int) or isinstance(rd, bool) or rd < 1):
        problems.append(f"{where}.retention_days: must be a positive integer")
    sd = resource.get("soft_delete", False)
    if not isinstance(sd, bool):
        problems.append(f"{where}.soft_delete: must be true or false, got {sd!r}")
    reserved = {str(kc).lower(), "flow_document", "flow_published_at"}
    for p in projections:
        if p.column.lower() in reserved:
            problems.append(f"{where}.projections.{p.column}: clashes with a reserved column")
    return problems
