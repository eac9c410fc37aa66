"""PostgreSQL staging target: one multi-row upsert per batch, newer version wins.

Identifiers always go through ``psycopg2.sql``; documents are bound values.
"""
from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from sophia_tasks.core.documents import latest_per_key, version_of
from sophia_tasks.core.flowspec import Binding, FlowSpec
from sophia_tasks.materializers.base import TransientTargetError, WriteResult, deadline, register
from sophia_tasks.materializers.projection import check_table_resource, keyed, project
from sophia_tasks.settings import Settings
from sophia_tasks.store.db import Connections, connections, jsonb_text

PG_TYPES = {
    "string": "text",
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "object": "jsonb",
}



# SQLSTATE classes that say "try again later": connection (08), insufficient resources (53),
# operator intervention (57: shutdown, cancel), system error (58); plus serialization
# failure, deadlock and lock timeout. psycopg2 also maps class 54 (a program limit, e.g. an
# index row too large) to OperationalError, but that one is the document's fault.
_TRANSIENT_CLASSES = ("08", "53", "57", "58")
_TRANSIENT_CODES = {"40001", "40P01", "55P03"}


def _transient(exc: BaseException) -> bool:
    code = getattr(exc, "pgcode", None)
    if code:
        return code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES
    return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))


class PostgresMaterializer:
    name = "postgres"

    def __init__(self, settings: Settings, spec: FlowSpec, conns: Connections = connections) -> None:
        self.dsn = settings.postgres_dsn
        self.spec = spec
        self.conns = conns
        self._ready: set[tuple[int, str]] = set()

    def ensure_table(self, binding: Binding, lock_ms: int | None = None) -> None:
        """``lock_ms``: how long the DDL may wait for the table's lock (a write passes its own limit: a
        process's first write to a locked table must time out like its upsert, not hang)."""
        conn = self.conns.get(self.dsn)
        marker = (id(conn), str(binding.table))
        if marker in self._ready:
            return
        table = sql.Identifier(str(binding.table))
        columns = [
            sql.SQL("{} text PRIMARY KEY").format(sql.Identifier(binding.key_column)),
            sql.SQL("flow_document jsonb NOT NULL"),
            sql.SQL("flow_published_at timestamptz NOT NULL"),
        ] + [sql.SQL("{} {}").format(sql.Identifier(p.column), sql.SQL(PG_TYPES[p.type]))
             for p in binding.projections]
        with self.conns.transaction(self.dsn) as cur:
            if lock_ms is not None:
                cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{lock_ms}ms",))
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sophia-ddl:{binding.table}",))
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(columns)))
            for p in binding.projections:
                cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    table, sql.Identifier(p.column), sql.SQL(PG_TYPES[p.type])))
            cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (flow_published_at)").format(
                sql.Identifier(f"{binding.table}_published_idx"[:63]), table))
        self._ready.add(marker)

    def _upsert_statement(self, binding: Binding) -> sql.Composed:
        table = sql.Identifier(str(binding.table))
        names = [binding.key_column, "flow_document", "flow_published_at"] + [p.column for p in binding.projections]
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names[1:])
        return sql.SQL(
            "INSERT INTO {table} AS t ({cols}) VALUES %s "
            "ON CONFLICT ({key}) DO UPDATE SET {updates} "
            "WHERE t.flow_published_at <= EXCLUDED.flow_published_at"
        ).format(table=table, cols=cols, key=sql.Identifier(binding.key_column), updates=updates)

    def write_batch(self, binding: Binding, documents: list[dict[str, Any]]) -> WriteResult:
        pairs, bad = keyed(self.spec, binding, documents)
        pairs = latest_per_key(pairs)
        result = WriteResult(keyless=list(bad))
        if not pairs:
            return result
        rows = []
        for key, doc in pairs:
            rows.append((key, jsonb_text(doc), version_of(doc), *[
                psycopg2.extras.Json(v, dumps=jsonb_text) if p.type == "object" and v is not None
                else v.replace("\x00", "\ufffd") if isinstance(v, str) else v
                for p, v in zip(binding.projections, project(doc, binding.projections), strict=True)]))
        template = "(" + ", ".join(["%s", "%s::jsonb", "%s::timestamptz"] + ["%s"] * len(binding.projections)) + ")"
        try:
            for attempt in (1, 2):
                try:
                    limit = deadline()
                    lock_ms, statement_ms = (10_000, 120_000) if limit is None else (
                        int(min(10.0, limit) * 1000), int(min(120.0, limit) * 1000))
                    self.ensure_table(binding, lock_ms)
                    with self.conns.transaction(self.dsn) as cur:
                        cur.execute("SELECT set_config('lock_timeout', %s, true), "
                                    "set_config('statement_timeout', %s, true)", (f"{lock_ms}ms", f"{statement_ms}ms"))
                        stmt = self._upsert_statement(binding).as_string(cur)
                        psycopg2.extras.execute_values(cur, stmt, rows, template=template, page_size=len(rows))
                        result.written = cur.rowcount if cur.rowcount >= 0 else len(rows)
                    break
                except psycopg2.errors.UndefinedTable:
                    # Dropped under the "ready" cache (an operator, before a rebuild): create it again, once.
                    if attempt == 2:
                        raise
                    self._ready = {m for m in self._ready if m[1] != str(binding.table)}
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    # A kept connection the server closed while idle (a restart, pg_terminate_backend):
                    # transaction() has discarded it; try once more on a fresh one. The upsert is
                    # idempotent, so a retry after an unknown outcome is safe. Timeouts are not retried.
                    if attempt == 2 or getattr(exc, "pgcode", None):
                        raise
        except psycopg2.Error as exc:
            if _transient(exc):
                raise TransientTargetError(f"postgres: {str(exc).strip()}") from exc
            raise
        result.skipped_stale = len(rows) - result.written
        return result

    def count(self, binding: Binding) -> int:
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(str(binding.table))))
            return int(cur.fetchone()[0])

    def fetch(self, binding: Binding, key: str) -> dict[str, Any] | None:
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(sql.SQL("SELECT flow_document FROM {} WHERE {} = %s").format(
                sql.Identifier(str(binding.table)), sql.Identifier(binding.key_column)), (key,))
            row = cur.fetchone()
            return row[0] if row else None

    def purge_older_than(self, binding: Binding, days: int) -> int:
        self.ensure_table(binding)
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE flow_published_at < now() - make_interval(days => %s)").format(
                sql.Identifier(str(binding.table))), (days,))
            return cur.rowcount

    def close(self) -> None:
        self.conns.discard(self.dsn)


@register("postgres", check_table_resource)
def factory(settings: Settings, spec: FlowSpec) -> PostgresMaterializer:
    return PostgresMaterializer(settings, spec)
