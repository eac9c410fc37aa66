"""PostgreSQL staging target: one multi-row upsert per batch, newer version wins.

Identifiers always go through ``psycopg2.sql``; documents are bound values.
"""
from __future__ import annotations

from typing import Any, Callable

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from sophia_tasks.core.documents import is_delete, latest_per_key, version_of
from sophia_tasks.core.flowspec import Binding, FlowSpec, Projection
from sophia_tasks.materializers.base import TransientTargetError, WriteResult, deadline, register
from sophia_tasks.materializers.projection import check_table_resource, keyed, project
from sophia_tasks.materializers.schema import BindingPaused, TableChecks, table_drift
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

#: The service's table of hard-deleted keys (target table, key, version).
TOMBSTONES = "sophia_tombstones"
#: ``format_type`` names for the types above that it spells otherwise.
_PG_SYNONYMS = {"timestamp with time zone": "timestamptz"}


def _ident(name: str) -> str:
    """An identifier quoted as PostgreSQL reads it, for the manual steps printed to an operator."""
    return '"' + name.replace('"', '""') + '"'


def _bind(p: Projection, v: Any) -> Any:
    """A projected value as the upsert binds it (the fill must store what a write would)."""
    if p.type == "object" and v is not None:
        return psycopg2.extras.Json(v, dumps=jsonb_text)
    return v.replace("\x00", "\ufffd") if isinstance(v, str) else v


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
        self._checks = TableChecks()  # table -> its last check against the spec (a short cache)

    # -- the table: created when missing, else checked against the spec (never altered here) -------
    def ensure_table(self, binding: Binding, lock_ms: int | None = None) -> None:
        """Create a missing table (nothing to fill); a table that does not match the spec raises
        BindingPaused. Columns are added only by `sophia-tasks flows apply`, which also fills them
        for the rows already there: a column added at write time would stay NULL on every older row.
        ``lock_ms``: how long creating it may wait for a lock (a write passes its own limit: a process's
        first write must time out like its upsert, not hang)."""
        table = str(binding.table)
        drift = self._checks.cached(table)
        if drift is None:
            with self.conns.transaction(self.dsn) as cur:
                if lock_ms is not None:
                    cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{lock_ms}ms",))
                live = self._live_columns(cur, table)
                if live is None:
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sophia-ddl:{binding.table}",))
                    self._create(cur, binding)
                    live = self._live_columns(cur, table) or {}
                drift = table_drift(self.expected_columns(binding), live, self.required_columns(binding))
            self._checks.remember(table, drift)
        if drift:
            raise BindingPaused(self.name, table, drift)

    def _create(self, cur: Any, binding: Binding) -> None:
        table = sql.Identifier(str(binding.table))
        columns = [
            sql.SQL("{} text PRIMARY KEY").format(sql.Identifier(binding.key_column)),
            sql.SQL("flow_document jsonb NOT NULL"),
            sql.SQL("flow_published_at timestamptz NOT NULL"),
        ] + [sql.SQL("{} {}").format(sql.Identifier(p.column), sql.SQL(PG_TYPES[p.type]))
             for p in binding.projections]
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(columns)))
        cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (flow_published_at)").format(
            sql.Identifier(f"{binding.table}_published_idx"[:63]), table))

    @staticmethod
    def column_type(ptype: str) -> str:
        return PG_TYPES[ptype]

    def expected_columns(self, binding: Binding) -> dict[str, str]:
        """Column -> type as ``live_columns`` names it, for every column the writes need."""
        out = {binding.key_column: "text", "flow_document": "jsonb", "flow_published_at": "timestamptz"}
        out.update((p.column, PG_TYPES[p.type]) for p in binding.projections)
        return out

    @staticmethod
    def required_columns(binding: Binding) -> tuple[str, ...]:
        return (binding.key_column, "flow_document", "flow_published_at")

    @staticmethod
    def _live_columns(cur: Any, table: str) -> dict[str, str] | None:
        cur.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                    "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                    (sql.Identifier(table).as_string(cur),))
        rows = cur.fetchall()
        if not rows:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(table).as_string(cur),))
            if not cur.fetchone()[0]:
                return None
        return {name: _PG_SYNONYMS.get(typ, typ) for name, typ in rows}

    def live_columns(self, table: str) -> dict[str, str] | None:
        """The table's columns and types (None: no such table), in PG_TYPES' words."""
        with self.conns.transaction(self.dsn) as cur:
            return self._live_columns(cur, table)

    def create_table(self, binding: Binding) -> None:
        with self.conns.transaction(self.dsn) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sophia-ddl:{binding.table}",))
            self._create(cur, binding)
        self._checks.forget(str(binding.table))

    def add_columns(self, binding: Binding, projections: list[Projection]) -> None:
        """Add the projections' columns (NULL for now) in one transaction; safe to rerun."""
        table = sql.Identifier(str(binding.table))
        with self.conns.transaction(self.dsn) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sophia-ddl:{binding.table}",))
            for p in projections:
                cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    table, sql.Identifier(p.column), sql.SQL(PG_TYPES[p.type])))
        self._checks.forget(str(binding.table))

    def fill_columns(self, binding: Binding, projections: list[Projection], batch_rows: int = 1000,
                     progress: Callable[[int, int], None] | None = None) -> int:
        """Set ``projections`` on every row from its stored document, with the writes' coercion.

        A batch of rows is read in key order and written back with one UPDATE ... FROM (VALUES ...);
        a row a live write replaced in between (another ``flow_published_at``) is left alone: that
        write projected the column itself. Answers the rows filled.
        """
        if not projections:
            return 0
        table = sql.Identifier(str(binding.table))
        key = sql.Identifier(binding.key_column)
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
            total = int(cur.fetchone()[0])
        names = [f"c{i}" for i in range(len(projections))]
        update = sql.SQL(
            "UPDATE {table} AS t SET {sets} FROM (VALUES %s) AS v(k, p, {names}) "
            "WHERE t.{key} = v.k AND t.flow_published_at = v.p").format(
            table=table, key=key, names=sql.SQL(", ").join(sql.Identifier(n) for n in names),
            sets=sql.SQL(", ").join(sql.SQL("{} = v.{}").format(sql.Identifier(p.column), sql.Identifier(n))
                                    for p, n in zip(projections, names, strict=True)))
        template = "(" + ", ".join(["%s", "%s::timestamptz"] + [f"%s::{PG_TYPES[p.type]}" for p in projections]) + ")"
        done, filled, last = 0, 0, None
        while True:
            with self.conns.transaction(self.dsn) as cur:
                if last is None:
                    cur.execute(sql.SQL("SELECT {k}, flow_published_at, flow_document FROM {t} ORDER BY {k} LIMIT %s")
                                .format(k=key, t=table), (batch_rows,))
                else:
                    cur.execute(sql.SQL("SELECT {k}, flow_published_at, flow_document FROM {t} WHERE {k} > %s "
                                        "ORDER BY {k} LIMIT %s").format(k=key, t=table), (last, batch_rows))
                rows = cur.fetchall()
                if not rows:
                    break
                values = [(k, at, *[_bind(p, v) for p, v in zip(projections, project(doc, projections), strict=True)])
                          for k, at, doc in rows]
                stmt = update.as_string(cur)
                psycopg2.extras.execute_values(cur, stmt, values, template=template, page_size=len(values))
                filled += cur.rowcount if cur.rowcount >= 0 else 0
            last = rows[-1][0]
            done += len(rows)
            if progress is not None:
                progress(done, max(total, done))
        return filled

    @staticmethod
    def manual_type_change(binding: Binding, column: str, ptype: str) -> str:
        """The operator's step for a changed type: drop the column, and `flows apply` adds it back
        with the new type and fills it from the stored documents (the writes' coercion)."""
        return f"ALTER TABLE {_ident(str(binding.table))} DROP COLUMN {_ident(column)};"

    @staticmethod
    def manual_drop(table: str) -> str:
        return f"DROP TABLE {_ident(table)};"

    def ensure_tombstones(self) -> None:
        """The versions of hard-deleted keys, per table: an upsert older than its key's delete is stale."""
        conn = self.conns.get(self.dsn)
        marker = (id(conn), TOMBSTONES)
        if marker in self._ready:
            return
        with self.conns.transaction(self.dsn) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sophia-ddl:{TOMBSTONES}",))
            cur.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (target text NOT NULL, key text NOT NULL, "
                "version timestamptz NOT NULL, deleted_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (target, key))").format(sql.Identifier(TOMBSTONES)))
        self._ready.add(marker)

    def _upsert_statement(self, binding: Binding) -> sql.Composed:
        table = sql.Identifier(str(binding.table))
        names = [binding.key_column, "flow_document", "flow_published_at"] + [p.column for p in binding.projections]
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names[1:])
        if binding.soft_delete:  # deletes are rows here: no tombstones to consult
            return sql.SQL(
                "INSERT INTO {table} AS t ({cols}) VALUES %s "
                "ON CONFLICT ({key}) DO UPDATE SET {updates} "
                "WHERE t.flow_published_at <= EXCLUDED.flow_published_at"
            ).format(table=table, cols=cols, key=sql.Identifier(binding.key_column), updates=updates)
        return sql.SQL(
            "INSERT INTO {table} AS t ({cols}) SELECT * FROM (VALUES %s) AS v ({cols}) "
            "WHERE NOT EXISTS (SELECT 1 FROM {tombstones} d WHERE d.target = {target} AND d.key = v.{key} "
            "AND d.version >= v.flow_published_at) "
            "ON CONFLICT ({key}) DO UPDATE SET {updates} "
            "WHERE t.flow_published_at <= EXCLUDED.flow_published_at"
        ).format(table=table, cols=cols, key=sql.Identifier(binding.key_column), updates=updates,
                 tombstones=sql.Identifier(TOMBSTONES), target=sql.Literal(str(binding.table)))

    def _delete_statement(self, binding: Binding) -> sql.Composed:
        """Record the tombstones (the newest version wins) and delete the rows no newer than them."""
        return sql.SQL(
            "WITH d (key, version) AS (VALUES %s), "
            "tomb AS (INSERT INTO {tombstones} AS o (target, key, version) SELECT {target}, key, version FROM d "
            "ON CONFLICT (target, key) DO UPDATE SET version = EXCLUDED.version, deleted_at = now() "
            "WHERE o.version < EXCLUDED.version) "
            "DELETE FROM {table} t USING d WHERE t.{key} = d.key AND t.flow_published_at <= d.version"
        ).format(table=sql.Identifier(str(binding.table)), key=sql.Identifier(binding.key_column),
                 tombstones=sql.Identifier(TOMBSTONES), target=sql.Literal(str(binding.table)))

    def write_batch(self, binding: Binding, documents: list[dict[str, Any]]) -> WriteResult:
        pairs, bad = keyed(self.spec, binding, documents)
        pairs = latest_per_key(pairs)
        result = WriteResult(keyless=list(bad))
        if not pairs:
            return result
        deletes: list[tuple[str, str]] = []
        if not binding.soft_delete:  # with soft deletes the delete document is the row
            deletes = [(key, version_of(doc)) for key, doc in pairs if is_delete(doc)]
            if deletes:
                pairs = [(key, doc) for key, doc in pairs if not is_delete(doc)]
        rows = []
        cast = ["%s", "%s::jsonb", "%s::timestamptz"] + (
            ["%s"] * len(binding.projections) if binding.soft_delete
            else [f"%s::{PG_TYPES[p.type]}" for p in binding.projections])
        for key, doc in pairs:
            rows.append((key, jsonb_text(doc), version_of(doc), *[
                _bind(p, v) for p, v in zip(binding.projections, project(doc, binding.projections), strict=True)]))
        template = "(" + ", ".join(cast) + ")"
        try:
            for attempt in (1, 2):
                try:
                    limit = deadline()
                    lock_ms, statement_ms = (10_000, 120_000) if limit is None else (
                        int(min(10.0, limit) * 1000), int(min(120.0, limit) * 1000))
                    self.ensure_table(binding, lock_ms)
                    if not binding.soft_delete:
                        self.ensure_tombstones()
                    with self.conns.transaction(self.dsn) as cur:
                        cur.execute("SELECT set_config('lock_timeout', %s, true), "
                                    "set_config('statement_timeout', %s, true)", (f"{lock_ms}ms", f"{statement_ms}ms"))
                        result.written = 0
                        if rows:
                            stmt = self._upsert_statement(binding).as_string(cur)
                            psycopg2.extras.execute_values(cur, stmt, rows, template=template, page_size=len(rows))
                            result.written = cur.rowcount if cur.rowcount >= 0 else len(rows)
                        if deletes:
                            psycopg2.extras.execute_values(cur, self._delete_statement(binding).as_string(cur),
                                                           deletes, template="(%s, %s::timestamptz)",
                                                           page_size=len(deletes))
                            result.written += max(cur.rowcount, 0)
                    break
                except psycopg2.errors.UndefinedTable:
                    # Dropped under the "ready" cache (an operator, before a rebuild): create it again, once.
                    if attempt == 2:
                        raise
                    self._ready = {m for m in self._ready if m[1] not in (str(binding.table), TOMBSTONES)}
                    self._checks.forget(str(binding.table))
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
        result.skipped_stale = len(rows) + len(deletes) - result.written
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
        try:
            self.ensure_table(binding)
        except BindingPaused:
            pass  # the purge needs only flow_published_at; the projections wait for `flows apply`
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE flow_published_at < now() - make_interval(days => %s)").format(
                sql.Identifier(str(binding.table))), (days,))
            return cur.rowcount

    def purge_tombstones(self, binding: Binding, days: int) -> int:
        """Tombstones only guard against late, older upserts; after the journal's window none can come."""
        self.ensure_tombstones()
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE target = %s AND deleted_at < now() - make_interval(days => %s)")
                        .format(sql.Identifier(TOMBSTONES)), (str(binding.table), days))
            return cur.rowcount

    # -- erasure ----------------------------------------------------------------------
    #: Keys per statement of an erasure.
    erase_batch = 1000

    def erase(self, binding: Binding, keys: list[str]) -> int:
        """One ``DELETE ... = ANY`` per batch of keys: the rows go, soft-deleted ones included."""
        return self._per_batch(binding, keys, "DELETE FROM {} WHERE {} = ANY(%s)")

    def count_keys(self, binding: Binding, keys: list[str]) -> int:
        return self._per_batch(binding, keys, "SELECT count(*) FROM {} WHERE {} = ANY(%s)")

    def _per_batch(self, binding: Binding, keys: list[str], statement: str) -> int:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return 0
        self.ensure_table(binding)
        query = sql.SQL(statement).format(sql.Identifier(str(binding.table)), sql.Identifier(binding.key_column))
        total = 0
        try:
            for start in range(0, len(unique), self.erase_batch):
                with self.conns.transaction(self.dsn) as cur:
                    cur.execute(query, (unique[start:start + self.erase_batch],))
                    total += int(cur.fetchone()[0]) if cur.description else cur.rowcount
        except psycopg2.Error as exc:
            if _transient(exc):
                raise TransientTargetError(f"postgres: {str(exc).strip()}") from exc
            raise
        return total

    def search(self, binding: Binding, address: str) -> list[str]:
        """Rows whose document's text holds the address (``ILIKE``, wildcards escaped), confirmed in Python."""
        from sophia_tasks.core.addresses import AddressMatcher, like_pattern

        matcher = AddressMatcher(address)
        self.ensure_table(binding)
        query = sql.SQL("SELECT {}, flow_document FROM {} WHERE flow_document::text ILIKE %s ESCAPE '!'").format(
            sql.Identifier(binding.key_column), sql.Identifier(str(binding.table)))
        found: list[str] = []
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(query, (like_pattern(address),))
            while rows := cur.fetchmany(self.erase_batch):
                found += [str(key) for key, doc in rows if matcher.names(doc)]
        return found

    def close(self) -> None:
        self.conns.discard(self.dsn)


@register("postgres", check_table_resource)
def factory(settings: Settings, spec: FlowSpec) -> PostgresMaterializer:
    return PostgresMaterializer(settings, spec)
