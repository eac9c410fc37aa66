"""`sophia-tasks flows plan` and `flows apply`: the live tables against the flow spec, like flowctl.

The plan compares every SQL binding of the spec (PostgreSQL, Snowflake: any plugin whose
materializer answers ``live_columns``) with its live table, and the bindings `apply` recorded
earlier (the service table ``sophia_flow_bindings`` in PostgreSQL) with the spec, to find the
tables the spec no longer binds. ``apply`` runs the safe changes only: create a table, add a
column and fill it for the rows already there from the stored document, with the writes' own
coercion. A changed type, a key or ``flow_*`` column that is missing, and a table no longer bound
are refused with the statement an operator runs by hand. Nothing is ever dropped here.

Workers pause a binding whose table does not match (``sophia_tasks.materializers.schema``) and
resume by themselves once ``apply`` has run.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import psycopg2.extras

from sophia_tasks.core.flowspec import Binding, FlowSpec, Projection
from sophia_tasks.materializers import get_materializer
from sophia_tasks.materializers.schema import table_drift
from sophia_tasks.settings import Settings
from sophia_tasks.store.db import connections

log = logging.getLogger(__name__)

#: What `apply` applied, per materialization and table: how removed bindings are known.
SERVICE_TABLE = "sophia_flow_bindings"
SERVICE_DDL = f"""
CREATE TABLE IF NOT EXISTS {SERVICE_TABLE} (
    materialization text NOT NULL,
    endpoint        text NOT NULL,
    table_name      text NOT NULL,
    source          text NOT NULL,
    columns         jsonb NOT NULL,
    pending_fill    jsonb NOT NULL DEFAULT '[]',
    applied_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (materialization, table_name)
)
"""

#: Exit codes of `flows plan` and `flows apply` (like `terraform plan -detailed-exitcode`).
EXIT_NO_CHANGES = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2

SAFE_ACTIONS = ("create_table", "add_column", "fill_column", "record", "forget")
REFUSED_ACTIONS = ("change_type", "missing_required", "removed_binding")
_SYMBOL = {"create_table": "+", "add_column": "+", "fill_column": "~", "record": "=", "forget": "-",
           "change_type": "!", "missing_required": "!", "removed_binding": "!"}


@dataclass(frozen=True)
class Change:
    """One difference between the spec and the live tables, and what `apply` does about it."""

    action: str
    materialization: str
    endpoint: str
    table: str
    column: str | None = None
    type: str | None = None          # the type the spec wants, in the target's words
    live_type: str | None = None     # the type the table has
    detail: str = ""
    manual: str | None = None        # refused: the statement(s) an operator runs by hand
    binding: Binding | None = field(default=None, compare=False, repr=False)
    projection: Projection | None = field(default=None, compare=False, repr=False)

    @property
    def safe(self) -> bool:
        return self.action in SAFE_ACTIONS

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("binding", None)
        out.pop("projection", None)
        out["safe"] = self.safe
        return out

    def describe(self) -> str:
        where = f"{self.endpoint} {self.table}"
        if self.action == "create_table":
            return f"+ create table {where} ({self.detail})"
        if self.action == "add_column":
            return f"+ add column {self.column} {self.type} to {where}, filled from the stored documents"
        if self.action == "fill_column":
            return f"~ fill column {self.column} of {where} (a fill an earlier apply did not finish)"
        if self.action == "record":
            return f"= record the binding of {where} as applied ({self.detail})"
        if self.action == "forget":
            return f"- forget {where}: {self.detail}"
        return f"! {self.detail}\n    manual step: {self.manual}"


@dataclass
class Plan:
    changes: list[Change]

    @property
    def safe(self) -> list[Change]:
        return [c for c in self.changes if c.safe]

    @property
    def refused(self) -> list[Change]:
        return [c for c in self.changes if not c.safe]

    @property
    def exit_code(self) -> int:
        return EXIT_CHANGES if self.changes else EXIT_NO_CHANGES

    def to_json(self) -> dict[str, Any]:
        return {"changes": [c.to_json() for c in self.changes], "to_apply": len(self.safe),
                "refused": len(self.refused), "exit_code": self.exit_code}

    def render(self) -> str:
        if not self.changes:
            return "No changes: every table matches the flow spec."
        lines = [c.describe() for c in self.changes]
        lines.append(f"Plan: {len(self.safe)} to apply, {len(self.refused)} refused (a manual step each).")
        if self.safe:
            lines.append("Run `sophia-tasks flows apply` to apply the safe changes.")
        return "\n".join(lines)


# -- the diff (pure) -----------------------------------------------------------------------
def diff_binding(materialization: str, endpoint: str, binding: Binding, expected: dict[str, str],
                 required: tuple[str, ...], live: dict[str, str] | None, recorded: dict[str, Any] | None,
                 manual_type_change: Callable[[Binding, str, str], str]) -> list[Change]:
    """The changes one binding needs: ``live`` its table's columns (None: no table), ``recorded``
    what `apply` recorded for it (None: never)."""
    table = str(binding.table)
    if live is None:
        return [Change("create_table", materialization, endpoint, table,
                       detail=f"{len(expected)} columns: " + ", ".join(f"{c} {t}" for c, t in expected.items()),
                       binding=binding)]
    out: list[Change] = []
    by_column = {p.column: p for p in binding.projections}
    for d in table_drift(expected, live, required):
        if d.required:
            out.append(Change(
                "missing_required", materialization, endpoint, table, d.column, d.want, d.have,
                detail=f"{endpoint} table {table}: {d.describe()}; it was made for another spec (key or "
                       f"flow_* column), so apply will not change it",
                manual=f"rename it aside (ALTER TABLE {table} RENAME TO {table}_old), then "
                       f"`sophia-tasks flows apply` creates it anew and `sophia-tasks rebuild --target "
                       f"{materialization}` fills it from the journal",
                binding=binding))
        elif d.kind == "missing_column":
            out.append(Change("add_column", materialization, endpoint, table, d.column, d.want,
                              binding=binding, projection=by_column[d.column]))
        else:
            p = by_column[d.column]
            out.append(Change(
                "change_type", materialization, endpoint, table, d.column, d.want, d.have,
                detail=f"{endpoint} table {table}: {d.describe()}; apply never changes a column's type "
                       f"(the values already there may not convert)",
                manual=f"{manual_type_change(binding, d.column, p.type)}  then `sophia-tasks flows apply` adds "
                       f"it back as {d.want} and fills it from the stored documents",
                binding=binding, projection=p))
    pending = [c for c in (recorded or {}).get("pending_fill") or [] if c in live and c in by_column]
    for column in pending:
        out.append(Change("fill_column", materialization, endpoint, table, column, expected.get(column),
                          binding=binding, projection=by_column[column]))
    if not out and (recorded is None or recorded.get("columns") != expected):
        out.append(Change("record", materialization, endpoint, table,
                          detail="first apply" if recorded is None else "columns changed",
                          binding=binding))
    return out


def removed_bindings(spec: FlowSpec, recorded: Iterable[dict[str, Any]],
                     table_exists: Callable[[str, str], bool | None],
                     manual_drop: Callable[[str, str], str]) -> list[Change]:
    """Recorded bindings the spec no longer has: reported while their table exists (never dropped),
    forgotten once it is gone. ``table_exists(endpoint, table)`` None: that endpoint is unknown now."""
    bound = {(m.name, str(b.table)) for m in spec.materializations.values() for b in m.bindings if b.table}
    out: list[Change] = []
    for row in recorded:
        key = (row["materialization"], row["table_name"])
        if key in bound:
            continue
        endpoint, table = row["endpoint"], row["table_name"]
        exists = table_exists(endpoint, table)
        if exists is False:
            out.append(Change("forget", row["materialization"], endpoint, table,
                              detail="no longer bound and the table is gone"))
            continue
        out.append(Change(
            "removed_binding", row["materialization"], endpoint, table,
            detail=f"{endpoint} table {table} (materialization {row['materialization']}, from {row['source']}) is "
                   f"no longer bound by the flow spec: left as it is, nothing writes to it any more",
            manual=f"to drop it: {manual_drop(endpoint, table)} (the next apply forgets it); to keep it: "
                   f"`sophia-tasks flows apply --forget {row['materialization']}.{table}`"))
    return out


# -- against the live stores -----------------------------------------------------------------
def _schema_writers(settings: Settings, spec: FlowSpec) -> dict[str, Any]:
    """Endpoint -> its materializer, for the endpoints whose tables have columns (not Redis)."""
    out: dict[str, Any] = {}
    for m in spec.materializations.values():
        if m.endpoint in out:
            continue
        writer = get_materializer(m.endpoint, settings, spec)
        if hasattr(writer, "live_columns"):
            out[m.endpoint] = writer
    return out


def recorded_bindings(settings: Settings) -> list[dict[str, Any]]:
    """What `apply` recorded (nothing before the first apply; this never creates the table)."""
    with connections.transaction(settings.postgres_dsn) as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (SERVICE_TABLE,))
        if not cur.fetchone()[0]:
            return []
        cur.execute(f"SELECT materialization, endpoint, table_name, source, columns, pending_fill "
                    f"FROM {SERVICE_TABLE} ORDER BY materialization, table_name")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def make_plan(settings: Settings, spec: FlowSpec) -> Plan:
    writers = _schema_writers(settings, spec)
    recorded = recorded_bindings(settings)
    by_key = {(r["materialization"], r["table_name"]): r for r in recorded}
    changes: list[Change] = []
    for m in spec.materializations.values():
        writer = writers.get(m.endpoint)
        if writer is None:
            continue
        for b in m.bindings:
            changes += diff_binding(m.name, m.endpoint, b, writer.expected_columns(b), writer.required_columns(b),
                                    writer.live_columns(str(b.table)), by_key.get((m.name, str(b.table))),
                                    writer.manual_type_change)

    def writer_for(endpoint: str) -> Any:
        """The endpoint's materializer, also for an endpoint the spec no longer uses (None: unknown)."""
        if endpoint not in writers:
            try:
                writer = get_materializer(endpoint, settings, spec)
            except KeyError:
                return None
            writers[endpoint] = writer if hasattr(writer, "live_columns") else None
        return writers[endpoint]

    def exists(endpoint: str, table: str) -> bool | None:
        writer = writer_for(endpoint)
        return None if writer is None else writer.live_columns(table) is not None

    def manual_drop(endpoint: str, table: str) -> str:
        writer = writer_for(endpoint)
        return writer.manual_drop(table) if writer is not None else f"DROP TABLE {table};"

    changes += removed_bindings(spec, recorded, exists, manual_drop)
    return Plan(changes)


@dataclass
class ApplyResult:
    applied: list[Change]
    refused: list[Change]
    filled: dict[str, int]           # "endpoint table" -> rows filled

    @property
    def exit_code(self) -> int:
        return EXIT_CHANGES if self.refused else EXIT_NO_CHANGES

    def to_json(self) -> dict[str, Any]:
        return {"applied": [c.to_json() for c in self.applied], "refused": [c.to_json() for c in self.refused],
                "filled": self.filled, "exit_code": self.exit_code}


Progress = Callable[[str, int, int], None]


def apply_plan(settings: Settings, spec: FlowSpec, plan: Plan, progress: Progress | None = None,
               forget: Iterable[str] = ()) -> ApplyResult:
    """Run the plan's safe changes, binding by binding; refuse the rest. Safe to stop and rerun: a
    column's fill is recorded as pending before the column is added and cleared once it is done,
    so the next plan finishes it."""
    writers = _schema_writers(settings, spec)
    forget_keys = {tuple(f.split(".", 1)) for f in forget if "." in f}
    with connections.transaction(settings.postgres_dsn) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('sophia-flows-apply'))")
        cur.execute(SERVICE_DDL)
    applied: list[Change] = []
    refused: list[Change] = []
    filled: dict[str, int] = {}
    groups: dict[tuple[str, str], list[Change]] = {}
    for c in plan.changes:
        groups.setdefault((c.materialization, c.table), []).append(c)
    for (mat, table), changes in groups.items():
        todo = [c for c in changes if c.safe]
        for c in changes:
            if c.action == "removed_binding" and (mat, table) in forget_keys:
                _forget(settings, mat, table)
                applied.append(Change("forget", mat, c.endpoint, table, detail="kept by the operator's --forget"))
            elif not c.safe:
                refused.append(c)
        if not todo:
            continue
        first = todo[0]
        if first.action == "forget":
            _forget(settings, mat, table)
            applied.extend(todo)
            continue
        binding = first.binding
        assert binding is not None
        writer = writers[first.endpoint]
        blocked = any(not c.safe for c in changes)  # the binding stays paused; record it once it all matches
        applied_here = [c for c in todo if not (blocked and c.action == "record")]
        if any(c.action == "create_table" for c in applied_here):
            writer.create_table(binding)
        adds = [c.projection for c in applied_here if c.action == "add_column" and c.projection is not None]
        fills = adds + [c.projection for c in applied_here if c.action == "fill_column" and c.projection is not None]
        if adds:
            _mark_pending(settings, mat, first.endpoint, binding, [p.column for p in adds])
            writer.add_columns(binding, adds)
            log.info("%s: added %s to %s", first.endpoint, ", ".join(p.column for p in adds), table)
        if fills:
            def report(done: int, total: int, _where: str = f"{first.endpoint} {table}") -> None:
                if progress is not None:
                    progress(_where, done, total)
            filled[f"{first.endpoint} {table}"] = writer.fill_columns(binding, fills, progress=report)
        if not blocked:
            _record(settings, mat, first.endpoint, binding, writer.expected_columns(binding))
        elif fills:
            _clear_pending(settings, mat, table)
        applied.extend(applied_here)
    return ApplyResult(applied, refused, filled)


_UPSERT = (f"INSERT INTO {SERVICE_TABLE} (materialization, endpoint, table_name, source, columns, pending_fill) "
           f"VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (materialization, table_name) DO UPDATE SET ")


def _record(settings: Settings, mat: str, endpoint: str, binding: Binding, columns: dict[str, str]) -> None:
    """The binding as applied: its columns, nothing left to fill."""
    with connections.transaction(settings.postgres_dsn) as cur:
        cur.execute(_UPSERT + "endpoint = EXCLUDED.endpoint, source = EXCLUDED.source, columns = EXCLUDED.columns, "
                    "pending_fill = '[]', applied_at = now()",
                    (mat, endpoint, str(binding.table), binding.source, psycopg2.extras.Json(columns),
                     psycopg2.extras.Json([])))


def _mark_pending(settings: Settings, mat: str, endpoint: str, binding: Binding, columns: list[str]) -> None:
    """Before a column is added: its fill is owed, until ``_record`` or ``_clear_pending`` says done."""
    with connections.transaction(settings.postgres_dsn) as cur:
        cur.execute(_UPSERT + f"pending_fill = (SELECT jsonb_agg(DISTINCT c) FROM jsonb_array_elements_text("
                    f"{SERVICE_TABLE}.pending_fill || EXCLUDED.pending_fill) AS c)",
                    (mat, endpoint, str(binding.table), binding.source, psycopg2.extras.Json({}),
                     psycopg2.extras.Json(columns)))


def _clear_pending(settings: Settings, mat: str, table: str) -> None:
    with connections.transaction(settings.postgres_dsn) as cur:
        cur.execute(f"UPDATE {SERVICE_TABLE} SET pending_fill = '[]' WHERE materialization = %s AND table_name = %s",
                    (mat, table))


def _forget(settings: Settings, mat: str, table: str) -> None:
    with connections.transaction(settings.postgres_dsn) as cur:
        cur.execute(f"DELETE FROM {SERVICE_TABLE} WHERE materialization = %s AND table_name = %s", (mat, table))
