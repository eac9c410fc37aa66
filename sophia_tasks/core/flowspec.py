"""Load and check the flow spec (GitOps: one YAML file is the whole catalog).

Errors name the file, the path inside it and what is wrong, all at once, so an
operator fixes a spec in one pass rather than one error per deploy.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml

from sophia_tasks.core.alert_rules import check_alerts_section
from sophia_tasks.schemas import get_validator

#: An endpoint's own resource checks: ``check(resource, source, projections, where)`` answers the problems of one
#: binding's ``resource`` (each materializer plugin registers its own: ``sophia_tasks.materializers.base.register``).
ResourceCheck = Callable[[Mapping[str, Any], str, "tuple[Projection, ...]", str], list[str]]
PROJECTION_TYPES = ("string", "integer", "number", "boolean", "timestamp", "object")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
SQL_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


class FlowSpecError(ValueError):
    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the flow spec:\n{lines}")


@lru_cache(maxsize=1024)
def _pointer_parts(pointer: str) -> tuple[tuple[str, int | None], ...]:
    """A pointer's unescaped parts, each with its array index (None: not one), parsed once per pointer."""
    parts = (raw.replace("~1", "/").replace("~0", "~") for raw in pointer.lstrip("/").split("/"))
    return tuple((part, int(part) if part.isascii() and part.isdigit() else None) for part in parts)


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901 pointer lookup that answers None for anything missing.

    It runs for every key and projection of every document: the pointer is parsed once, and a
    plain dict is recognised by its type before the (slower) Mapping check.
    """
    if pointer in ("", "/"):
        return document
    node = document
    for part, idx in _pointer_parts(pointer):
        if type(node) is dict or isinstance(node, Mapping):
            node = node.get(part)
        elif idx is not None and isinstance(node, list):
            node = node[idx] if idx < len(node) else None
        else:
            return None
        if node is None:
            return None
    return node


@dataclass(frozen=True)
class Projection:
    column: str
    pointer: str
    type: str


class _Keyed:
    key: str

    def key_of(self, document: Mapping[str, Any]) -> str | None:
        value = resolve_pointer(document, self.key)
        if value is None or isinstance(value, (dict, list, bool)):
            return None
        return str(value)


@dataclass(frozen=True)
class Collection(_Keyed):
    name: str
    key: str
    schema: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Derivation(_Keyed):
    name: str
    source: str
    key: str
    transform: str
    config: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def load_transform(self) -> Callable[..., list[dict]]:
        return import_dotted(self.transform)


@dataclass(frozen=True)
class Binding:
    source: str
    resource: Mapping[str, Any]
    projections: tuple[Projection, ...] = ()

    @property
    def table(self) -> str | None:
        return self.resource.get("table")

    @property
    def key_column(self) -> str:
        return str(self.resource.get("key_column", "key"))

    @property
    def ttl_seconds(self) -> int:
        return int(self.resource.get("ttl_seconds", 86400))

    @property
    def key_prefix(self) -> str:
        return str(self.resource.get("key_prefix", f"sophia:{self.source}:"))

    @property
    def soft_delete(self) -> bool:
        """A delete keeps the row, as the delete document (``_meta.op = "d"``), instead of removing it."""
        return self.resource.get("soft_delete") is True

    @property
    def retention_days(self) -> int | None:
        value = self.resource.get("retention_days")
        return int(value) if value is not None else None


@dataclass(frozen=True)
class Materialization:
    name: str
    endpoint: str
    bindings: tuple[Binding, ...]
    description: str = ""

    def binding_for(self, collection: str) -> Binding | None:
        for binding in self.bindings:
            if binding.source == collection:
                return binding
        return None


@dataclass(frozen=True)
class FlowSpec:
    path: str
    collections: Mapping[str, Collection]
    derivations: Mapping[str, Derivation]
    materializations: Mapping[str, Materialization]
    # Days the event journal keeps (top-level ``journal: {retention_days: N}``); rebuilds reach this far back.
    journal_retention_days: int = 30

    def collection(self, name: str) -> Collection | Derivation:
        if name in self.collections:
            return self.collections[name]
        if name in self.derivations:
            return self.derivations[name]
        raise KeyError(f"unknown collection {name!r}")

    def key_pointer(self, name: str) -> str:
        return self.collection(name).key

    def derivations_of(self, collection: str) -> list[Derivation]:
        return [d for d in self.derivations.values() if d.source == collection]

    def materializations_of(self, collection: str) -> list[Materialization]:
        return [m for m in self.materializations.values() if m.binding_for(collection) is not None]

    def rows(self) -> list[dict[str, Any]]:
        """What `flows list` prints, like `flowctl catalog list --flows`."""
        out: list[dict[str, Any]] = []
        for c in self.collections.values():
            out.append({"name": c.name, "type": "collection", "reads_from": [], "writes_to": [c.name],
                        "detail": f"schema {c.schema}, key {c.key}"})
        for d in self.derivations.values():
            out.append({"name": d.name, "type": "derivation", "reads_from": [d.source], "writes_to": [d.name],
                        "detail": d.transform})
        for m in self.materializations.values():
            targets = []
            for b in m.bindings:
                if m.endpoint == "redis":
                    targets.append(f"redis:{b.key_prefix}*")
                else:
                    targets.append(f"{m.endpoint}:{b.table}")
            out.append({"name": m.name, "type": "materialization", "reads_from": [b.source for b in m.bindings],
                        "writes_to": targets, "detail": f"endpoint {m.endpoint}"})
        return out


def import_dotted(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not attr:
        module_name, _, attr = spec.rpartition(".")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def _check_pointer(value: Any, where: str, problems: list[str]) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        problems.append(f"{where}: must be a JSON pointer starting with '/', got {value!r}")
        return "/"
    return value


def _parse_projections(raw: Any, where: str, problems: list[str]) -> tuple[Projection, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping of column name to {{from, type}}")
        return ()
    out = []
    for column, conf in raw.items():
        here = f"{where}.{column}"
        if not isinstance(column, str) or not SQL_IDENT.match(column):
            problems.append(f"{here}: column name must be letters, digits and underscores (max 63)")
            continue
        if isinstance(conf, str):
            conf = {"from": conf, "type": "string"}
        if not isinstance(conf, Mapping):
            problems.append(f"{here}: must be a mapping with 'from' and 'type'")
            continue
        pointer = _check_pointer(conf.get("from"), f"{here}.from", problems)
        ptype = conf.get("type", "string")
        if ptype not in PROJECTION_TYPES:
            problems.append(f"{here}.type: must be one of {', '.join(PROJECTION_TYPES)}, got {ptype!r}")
            continue
        out.append(Projection(column=column, pointer=pointer, type=ptype))
    return tuple(out)


def parse_spec(data: Any, path: str = "<flow spec>", check_imports: bool = True,
               endpoints: Mapping[str, ResourceCheck] | None = None) -> FlowSpec:
    """The flow spec in ``data``, or a FlowSpecError with every problem found.

    ``endpoints`` are the materializers' names and resource checks (``sophia_tasks.flows`` passes the
    registered plugins'); without them a binding's resource is not checked here.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise FlowSpecError(path, ["top level: must be a mapping with collections, derivations, materializations"])
    unknown = set(data) - {"version", "collections", "derivations", "materializations", "alerts", "journal"}
    for key in sorted(map(str, unknown)):
        problems.append(f"{key}: unknown top-level section")
    if data.get("version", 1) != 1:
        problems.append(f"version: only version 1 is supported, got {data.get('version')!r}")

    collections: dict[str, Collection] = {}
    raw_cols = data.get("collections") or {}
    if not isinstance(raw_cols, Mapping) or not raw_cols:
        problems.append("collections: must be a non-empty mapping")
        raw_cols = {}
    for name, conf in raw_cols.items():
        where = f"collections.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}: name must be lower-case letters, digits and underscores")
            continue
        if not isinstance(conf, Mapping):
            problems.append(f"{where}: must be a mapping with schema and key")
            continue
        key = _check_pointer(conf.get("key"), f"{where}.key", problems)
        schema = conf.get("schema")
        if check_imports and schema is not None:
            try:
                get_validator(schema)
            except KeyError as exc:
                problems.append(f"{where}.schema: {exc.args[0] if exc.args else exc}")
        elif schema is None:
            problems.append(f"{where}.schema: required (the name of a registered schema)")
        collections[name] = Collection(name=name, key=key, schema=schema, description=str(conf.get("description", "")))

    derivations: dict[str, Derivation] = {}
    raw_ders = data.get("derivations") or {}
    if not isinstance(raw_ders, Mapping):
        problems.append("derivations: must be a mapping")
        raw_ders = {}
    for name, conf in raw_ders.items():
        where = f"derivations.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}: name must be lower-case letters, digits and underscores")
            continue
        if name in collections:
            problems.append(f"{where}: a collection has the same name")
            continue
        if not isinstance(conf, Mapping):
            problems.append(f"{where}: must be a mapping with source and transform")
            continue
        source = conf.get("source")
        if source not in collections:
            problems.append(f"{where}.source: {source!r} is not a collection of this spec")
        transform = conf.get("transform")
        if not isinstance(transform, str) or not transform:
            problems.append(f"{where}.transform: required, a dotted path such as package.module:function")
            transform = ""
        elif check_imports:
            try:
                fn = import_dotted(transform)
                if not callable(fn):
                    problems.append(f"{where}.transform: {transform} is not callable")
            except (ImportError, AttributeError, ValueError) as exc:
                problems.append(f"{where}.transform: cannot import {transform}: {exc}")
        config = conf.get("config") or {}
        if not isinstance(config, Mapping):
            problems.append(f"{where}.config: must be a mapping")
            config = {}
        key = conf.get("key")
        if key is None and source in collections:
            key = collections[source].key
        key = _check_pointer(key, f"{where}.key", problems)
        derivations[name] = Derivation(name=name, source=str(source), key=key, transform=transform,
                                       config=dict(config), description=str(conf.get("description", "")))

    known = set(collections) | set(derivations)
    materializations: dict[str, Materialization] = {}
    raw_mats = data.get("materializations") or {}
    if not isinstance(raw_mats, Mapping) or not raw_mats:
        problems.append("materializations: must be a non-empty mapping")
        raw_mats = {}
    for name, conf in raw_mats.items():
        where = f"materializations.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}: name must be lower-case letters, digits and underscores")
            continue
        if not isinstance(conf, Mapping):
            problems.append(f"{where}: must be a mapping with endpoint and bindings")
            continue
        endpoint = conf.get("endpoint")
        if endpoints is not None and endpoint not in endpoints:
            problems.append(f"{where}.endpoint: must be one of {', '.join(endpoints)}, got {endpoint!r}")
            continue
        if not isinstance(endpoint, str) or not endpoint:
            problems.append(f"{where}.endpoint: required (the name of a materializer), got {endpoint!r}")
            continue
        raw_bindings = conf.get("bindings")
        if not isinstance(raw_bindings, list) or not raw_bindings:
            problems.append(f"{where}.bindings: must be a non-empty list")
            continue
        bindings = []
        seen_sources: set[str] = set()
        for i, b in enumerate(raw_bindings):
            bw = f"{where}.bindings[{i}]"
            if not isinstance(b, Mapping):
                problems.append(f"{bw}: must be a mapping with source and resource")
                continue
            source = b.get("source")
            if source not in known:
                problems.append(f"{bw}.source: {source!r} is not a collection or derivation of this spec")
                continue
            if source in seen_sources:
                problems.append(f"{bw}.source: {source!r} is bound twice in this materialization")
                continue
            seen_sources.add(source)
            resource = b.get("resource") or {}
            if not isinstance(resource, Mapping):
                problems.append(f"{bw}.resource: must be a mapping")
                continue
            resource = dict(resource)
            projections = _parse_projections(resource.get("projections"), f"{bw}.resource.projections", problems)
            if endpoints is not None:
                problems += endpoints[endpoint](resource, str(source), projections, f"{bw}.resource")
            bindings.append(Binding(source=str(source), resource=resource, projections=projections))
        materializations[name] = Materialization(name=name, endpoint=str(endpoint), bindings=tuple(bindings),
                                                 description=str(conf.get("description", "")))

    journal_retention_days = 30
    raw_journal = data.get("journal")
    if raw_journal is not None:
        if not isinstance(raw_journal, Mapping):
            problems.append("journal: must be a mapping such as {retention_days: 30}")
        else:
            for key in sorted(map(str, set(raw_journal) - {"retention_days"})):
                problems.append(f"journal.{key}: unknown setting (known: retention_days)")
            rd = raw_journal.get("retention_days", 30)
            if not isinstance(rd, int) or isinstance(rd, bool) or rd < 1:
                problems.append(f"journal.retention_days: must be a positive integer, got {rd!r}")
            else:
                journal_retention_days = rd

    if data.get("alerts") is not None:  # thresholds for sophia.alerts, checked here so `flows validate` sees them
        problems += check_alerts_section(data["alerts"], materializations)
    if problems:
        raise FlowSpecError(path, problems)
    return FlowSpec(path=path, collections=collections, derivations=derivations, materializations=materializations,
                    journal_retention_days=journal_retention_days)


def load_spec(path: str | Path, check_imports: bool = True,
              endpoints: Mapping[str, ResourceCheck] | None = None) -> FlowSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowSpecError(str(p), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise FlowSpecError(str(p), [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_spec(data, str(p), check_imports=check_imports, endpoints=endpoints)
