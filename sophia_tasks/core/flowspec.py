"""Load and check the flow spec (GitOps: one YAML file is the whole catalog).

Errors name the file, the path inside it and what is wrong, all at once, so an
operator fixes a spec in one pass rather than one error per deploy.
"""
from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import yaml

from sophia_tasks.core.alert_rules import check_alerts_section
from sophia_tasks.schemas import Validator, get_validator
from sophia_tasks.schemas.json_schema import compile_validator, schema_problems

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


def _key_part(document: Any, pointer: str) -> str | None:
    value = resolve_pointer(document, pointer)
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text or None


class _Keyed:
    #: The key's JSON pointers: one, or several for a composite key.
    keys: tuple[str, ...]

    @property
    def key(self) -> str:
        """The key as written in the spec: the pointer, or the pointers joined by ", " (composite)."""
        return ", ".join(self.keys)

    def key_of(self, document: Mapping[str, Any]) -> str | None:
        """The one string every target stores as the document's key; None when a part is missing.

        A part is a string or a number (not an object, array, boolean, null or ""). A single
        pointer's value is the key as is. A composite key joins its parts with ":", each part
        percent-encoded first (RFC 3986, nothing kept: ":" becomes %3A, "%" %25), so the join can
        be split back and two different documents never share a key: ``[/portalId, /dealId]`` of
        ``{"portalId": 42, "dealId": "9001"}`` is ``42:9001``.
        """
        keys = self.keys
        if len(keys) == 1:
            return _key_part(document, keys[0])
        parts = []
        for pointer in keys:
            part = _key_part(document, pointer)
            if part is None:
                return None
            parts.append(quote(part, safe=""))
        return ":".join(parts)


@dataclass(frozen=True)
class Collection(_Keyed):
    name: str
    keys: tuple[str, ...]
    #: What the spec says: a registered schema's name, a file path, or "inline JSON Schema".
    schema: str | None = None
    description: str = ""
    #: The JSON Schema (2020-12) of the collection, when it is not a registered schema.
    json_schema: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    _validator: Validator | None = field(default=None, compare=False, repr=False)

    @property
    def validator(self) -> Validator:
        """``validate(document) -> (document | None, errors)``: the JSON Schema's or the registered one."""
        return self._validator if self._validator is not None else get_validator(str(self.schema))


@dataclass(frozen=True)
class Derivation(_Keyed):
    name: str
    source: str
    keys: tuple[str, ...]
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
class Route:
    """Envelopes whose ``type`` matches ``pattern`` (exact, or with ``*`` for any characters) go to
    ``collection``; ``op`` is "delete" when the type stands for a deletion."""

    pattern: str
    collection: str
    op: str | None = None

    @property
    def exact(self) -> bool:
        return "*" not in self.pattern

    def matches(self, event_type: str) -> bool:
        return event_type == self.pattern if self.exact else _glob(self.pattern).fullmatch(event_type) is not None


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


@dataclass(frozen=True)
class Routes:
    """The spec's ``routes`` (envelope type -> collection) and ``wrappers`` (typeless body forms)."""

    routes: tuple[Route, ...] = ()
    #: ``{"<field>": "<type>"}``: a body ``{"<field>": <document>, "isTest"?: bool}`` is an event of that type.
    wrappers: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, event_type: str) -> Route | None:
        """The route of ``event_type``: an exact name wins, then the longest matching pattern
        (the first declared among patterns of one length)."""
        for route in self.routes:
            if route.exact and route.pattern == event_type:
                return route
        best: Route | None = None
        for route in self.routes:
            if not route.exact and (best is None or len(route.pattern) > len(best.pattern)) \
                    and route.matches(event_type):
                best = route
        return best

    def known(self) -> list[str]:
        """The types and patterns a sender may use, for error messages."""
        return [r.pattern for r in self.routes]


@dataclass(frozen=True)
class FlowSpec:
    path: str
    collections: Mapping[str, Collection]
    derivations: Mapping[str, Derivation]
    materializations: Mapping[str, Materialization]
    # Days the event journal keeps (top-level ``journal: {retention_days: N}``); rebuilds reach this far back.
    journal_retention_days: int = 30
    routes: Routes = field(default_factory=Routes)

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
        for r in self.routes.routes:
            out.append({"name": r.pattern, "type": "route", "reads_from": [], "writes_to": [r.collection],
                        "detail": f"envelope type {r.pattern}" + (" (delete)" if r.op == "d" else "")})
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


def _check_key(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    """A key: one JSON pointer, or a non-empty list of distinct ones (a composite key)."""
    if isinstance(value, list):
        if not value:
            problems.append(f"{where}: a composite key needs at least one JSON pointer")
            return ("/",)
        pointers = tuple(_check_pointer(v, f"{where}[{i}]", problems) for i, v in enumerate(value))
        if len(set(pointers)) != len(pointers):
            problems.append(f"{where}: a pointer appears twice in the composite key")
        return pointers
    return (_check_pointer(value, where, problems),)


_SCHEMA_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def _is_schema_file(value: str) -> bool:
    return "/" in value or value.endswith(_SCHEMA_FILE_SUFFIXES)


def _load_schema(value: Any, where: str, base_dir: Path, check_imports: bool,
                 problems: list[str]) -> tuple[str | None, Mapping[str, Any] | None, Validator | None]:
    """(what the spec says, the JSON Schema, its validator) of a collection's ``schema``.

    A mapping is an inline JSON Schema; a string with a "/" or a .json/.yaml/.yml suffix is a JSON
    Schema file, relative to the spec's directory; any other string names a registered schema.
    """
    if value is None:
        problems.append(f"{where}: required: a registered schema's name, a JSON Schema "
                        "inline, or the path of a JSON Schema file relative to the spec")
        return None, None, None
    if isinstance(value, str) and not _is_schema_file(value):
        if check_imports:
            try:
                get_validator(value)
            except KeyError as exc:
                problems.append(f"{where}: {exc.args[0] if exc.args else exc}")
        return value, None, None
    if isinstance(value, str):
        file = base_dir / value
        label = value
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{where}: cannot read the JSON Schema file {file}: {exc.strerror or exc}")
            return label, None, None
        try:
            schema = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            problems.append(f"{where}: the JSON Schema file {file} is not valid "
                            f"{'JSON' if file.suffix == '.json' else 'YAML'}: {exc}")
            return label, None, None
        where = f"{where} ({file})"
    elif isinstance(value, Mapping):
        schema, label = value, "inline JSON Schema"
    else:
        problems.append(f"{where}: must be a registered schema's name, a JSON Schema or a file path, "
                        f"got {type(value).__name__}")
        return None, None, None
    found = schema_problems(schema)
    problems += [f"{where}: {p}" for p in found]
    if found:
        return label, None, None
    return label, schema, compile_validator(schema)


#: The spec says `op: delete`; the event message says "d" (as an Estuary document's `_meta.op`).
_OPS = {"delete": "d"}


def _parse_routes(raw: Any, raw_wrappers: Any, collections: Mapping[str, Collection],
                  derivations: Mapping[str, Any], problems: list[str]) -> Routes:
    routes: list[Route] = []
    if raw is not None and not isinstance(raw, Mapping):
        problems.append("routes: must be a mapping of envelope type (or pattern with *) to a collection")
        raw = {}
    for pattern, conf in (raw or {}).items():
        where = f"routes.{pattern}"
        if not isinstance(pattern, str) or not pattern.strip() or any(c.isspace() for c in pattern):
            problems.append(f"{where}: a type must be a non-empty string without spaces")
            continue
        op = None
        if isinstance(conf, Mapping):
            for key in sorted(map(str, set(conf) - {"collection", "op"})):
                problems.append(f"{where}.{key}: unknown setting (known: collection, op)")
            if conf.get("op") is not None:
                op = _OPS.get(conf.get("op"))
                if op is None:
                    problems.append(f"{where}.op: must be delete, got {conf.get('op')!r}")
            conf = conf.get("collection")
        if conf in derivations:
            problems.append(f"{where}: {conf!r} is a derivation; a route must name a collection "
                            f"({', '.join(collections) or 'none'})")
            continue
        if conf not in collections:
            problems.append(f"{where}: {conf!r} is not a collection of this spec; known collections: "
                            f"{', '.join(collections) or 'none'}")
            continue
        routes.append(Route(pattern=pattern, collection=str(conf), op=op))
    table = Routes(routes=tuple(routes))
    wrappers: dict[str, str] = {}
    if raw_wrappers is not None and not isinstance(raw_wrappers, Mapping):
        problems.append("wrappers: must be a mapping of body field to envelope type, such as {payload: order_created}")
        raw_wrappers = {}
    for name, event_type in (raw_wrappers or {}).items():
        where = f"wrappers.{name}"
        if not isinstance(name, str) or not name or name in ("type", "data", "id", "isTest"):
            problems.append(f"{where}: a body field name other than type, data, id and isTest")
            continue
        if not isinstance(event_type, str) or table.resolve(event_type) is None:
            problems.append(f"{where}: {event_type!r} is not a type of the routes; known types: "
                            f"{', '.join(table.known()) or 'none'}")
            continue
        wrappers[name] = event_type
    return Routes(routes=tuple(routes), wrappers=wrappers)


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
               endpoints: Mapping[str, ResourceCheck] | None = None, base_dir: str | Path | None = None) -> FlowSpec:
    """The flow spec in ``data``, or a FlowSpecError with every problem found.

    ``endpoints`` are the materializers' names and resource checks (``sophia_tasks.flows`` passes the
    registered plugins'); without them a binding's resource is not checked here. JSON Schema files
    are read relative to ``base_dir`` (``load_spec``: the spec file's directory; default: the
    current directory).
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise FlowSpecError(path, ["top level: must be a mapping with collections, derivations, materializations"])
    unknown = set(data) - {"version", "collections", "derivations", "materializations", "alerts", "journal",
                           "routes", "wrappers"}
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
        keys = _check_key(conf.get("key"), f"{where}.key", problems)
        label, json_schema, validator = _load_schema(conf.get("schema"), f"{where}.schema", base, check_imports,
                                                     problems)
        collections[name] = Collection(name=name, keys=keys, schema=label, json_schema=json_schema,
                                       _validator=validator, description=str(conf.get("description", "")))

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
        keys = collections[source].keys if key is None and source in collections else \
            _check_key(key, f"{where}.key", problems)
        derivations[name] = Derivation(name=name, source=str(source), keys=keys, transform=transform,
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

    routes = _parse_routes(data.get("routes"), data.get("wrappers"), collections, derivations, problems)
    if data.get("alerts") is not None:  # thresholds for sophia.alerts, checked here so `flows validate` sees them
        problems += check_alerts_section(data["alerts"], materializations)
    if problems:
        raise FlowSpecError(path, problems)
    return FlowSpec(path=path, collections=collections, derivations=derivations, materializations=materializations,
                    journal_retention_days=journal_retention_days, routes=routes)


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
    return parse_spec(data, str(p), check_imports=check_imports, endpoints=endpoints, base_dir=p.parent)
