"""Snowflake analytics target: the batch travels as one bound JSON array, one MERGE.

The real ``snowflake-connector-python`` is used in every mode; with no account it
connects over HTTP to the local fakesnow server, so the statements that run in
tests are the statements that run in production.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

import orjson

from sophia_tasks.core.documents import encoded, is_delete, latest_per_key, version_of
from sophia_tasks.core.flowspec import Binding, FlowSpec, Projection
from sophia_tasks.materializers.base import TransientTargetError, WriteResult, register
from sophia_tasks.materializers.projection import check_table_resource, keyed, project
from sophia_tasks.materializers.schema import BindingPaused, TableChecks, table_drift
from sophia_tasks.settings import Settings, SnowflakeSettings, is_loopback

log = logging.getLogger(__name__)

SF_TYPES = {
    "string": "VARCHAR",
    "integer": "NUMBER(38,0)",
    "number": "FLOAT",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP_TZ",
    "object": "VARIANT",
}
#: The table of hard-deleted keys (target table, key, version), beside the bound tables.
TOMBSTONES = "SOPHIA_TOMBSTONES"
#: information_schema's names for the types above that it spells otherwise.
_SF_SYNONYMS = {"TEXT": "VARCHAR"}
# A bound VARCHAR holds 16 MB; stay well under it and split bigger batches.
MAX_BIND_BYTES = 8 * 1024 * 1024


def quote_literal(text: str) -> str:
    """A string literal for a table name in the tombstones' TARGET column (names are checked too)."""
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """Flow-spec names are checked to [A-Za-z0-9_]; quoting keeps their case as written."""
    return '"' + name.replace('"', '""') + '"'


#: gzip level for the connector's request bodies (its default is 9).
REQUEST_GZIP_LEVEL = 1
#: ...and to an endpoint on this machine (the emulator): stored blocks, nothing to save on loopback.
LOOPBACK_GZIP_LEVEL = 0
#: The level ``_Gzip.compress`` uses in this process (set by ``_tune_request_compression``).
_gzip_level = REQUEST_GZIP_LEVEL


def request_gzip_level(sf: SnowflakeSettings) -> int:
    """Level 0 only for an emulator on this machine: with an account the connector talks to
    Snowflake's own host (``SOPHIA_SNOWFLAKE_HOST`` is not used unless set to another)."""
    return LOOPBACK_GZIP_LEVEL if sf.emulator and is_loopback(sf.host) else REQUEST_GZIP_LEVEL


def _tune_request_compression(level: int = REQUEST_GZIP_LEVEL) -> None:
    """The connector gzips every request body at level 9; our MERGE binds the whole batch (~3 MB of
    JSON for 500 calls), and level 9 took 12 % of the worker's CPU in a drain profile. Level 1
    compresses 2.5 MB in 13 ms instead of 48 ms, to 0.46 MB instead of 0.30 MB. Over loopback
    (the emulator) level 0: 1,000 calls (5.4 MB) take 4.5 ms to pack and the server 3.4 ms to
    unpack, against 38.6 and 13.4 ms at level 1. The request is the same in every other way: still
    gzip, against the emulator or Snowflake. Skipped if the connector changes."""
    global _gzip_level
    import gzip

    _gzip_level = level
    try:
        from snowflake.connector import network
    except ImportError:
        return
    module = getattr(network, "gzip", None)
    if module is not gzip or getattr(network, "_sophia_gzip", False):
        return

    class _Gzip:
        """``gzip`` as the connector's network module sees it, with a faster default level."""

        def __getattr__(self, name: str) -> Any:
            return getattr(gzip, name)

        @staticmethod
        def compress(data: bytes, compresslevel: int | None = None, **kwargs: Any) -> bytes:
            return gzip.compress(data, compresslevel=_gzip_level if compresslevel is None else compresslevel,
                                 **kwargs)

    network.gzip = _Gzip()  # type: ignore[assignment]
    network._sophia_gzip = True  # type: ignore[attr-defined]


#: The connector's switch for its platform probe (``snowflake.connector.platform_detection``).
PLATFORM_DETECTION_ENV = "SNOWFLAKE_DISABLE_PLATFORM_DETECTION"


def _skip_platform_detection(enabled: bool) -> None:
    """At every login the connector probes cloud metadata endpoints and builds a boto3 client to
    report which platform it runs on, telemetry sent with the login and nothing else. It cost 30 ms
    of CPU per connection and 140 ms on a process's first one (6 ms and 7 ms without), in every pool
    process and after every reconnect, plus up to 0.2 s of waiting on hosts without a metadata
    service. Off unless ``SOPHIA_SNOWFLAKE_PLATFORM_DETECTION`` is set; an operator's own
    ``SNOWFLAKE_DISABLE_PLATFORM_DETECTION`` is left as it is."""
    if not enabled:
        os.environ.setdefault(PLATFORM_DETECTION_ENV, "true")


def prepare_connector(sf: SnowflakeSettings) -> None:
    """The connector's process-wide settings, before a connection: request compression and the
    platform probe. Anything else that connects for this project (the benchmark's raw rate) calls
    it too, so it measures the same transport."""
    _tune_request_compression(request_gzip_level(sf))
    _skip_platform_detection(sf.platform_detection)


class SnowflakeMaterializer:
    name = "snowflake"

    def __init__(self, settings: Settings, spec: FlowSpec) -> None:
        self.sf = settings.snowflake
        self.spec = spec
        self._conn: Any = None
        self._ready: set[str] = set()
        self._checks = TableChecks()  # table -> its last check against the spec (a short cache)
        self._lock = threading.Lock()

    # -- connection ---------------------------------------------------------------
    def connection(self) -> Any:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        import snowflake.connector

        prepare_connector(self.sf)
        try:
            conn = snowflake.connector.connect(**self.sf.connect_kwargs())
        except Exception as exc:  # the connector raises several families on network failure
            raise TransientTargetError(f"snowflake unreachable: {exc}") from exc
        if self.sf.emulator:
            cur = conn.cursor()
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {quote_ident(self.sf.database)}")
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.sf.database)}.{quote_ident(self.sf.schema)}")
            cur.execute(f"USE SCHEMA {quote_ident(self.sf.database)}.{quote_ident(self.sf.schema)}")
        self._conn = conn
        self._ready.clear()
        self._checks.forget()
        return conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _execute(self, statement: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        import snowflake.connector.errors as sf_errors

        conn = self.connection()
        try:
            cur = conn.cursor()
            cur.execute(statement, params)
            try:
                return list(cur.fetchall())
            except sf_errors.Error:
                return []
        except (sf_errors.OperationalError, sf_errors.InterfaceError, sf_errors.DatabaseError,
                ConnectionError, OSError) as exc:
            # A session the server no longer knows (restart, expiry: 390111/390112/390114, HTTP 401 as
            # 290401) needs a new login, not a retry on the same connection.
            session_gone = getattr(exc, "errno", None) in (390111, 390112, 390114, 290401) or \
                "401" in str(exc) or "authentication token" in str(exc).lower()
            transient = session_gone or not isinstance(exc, sf_errors.ProgrammingError)
            if transient:
                self._discard()
                raise TransientTargetError(f"snowflake: {exc}") from exc
            raise

    def table_name(self, binding: Binding) -> str:
        return quote_ident(str(binding.table))

    # -- the table: created when missing, else checked against the spec (never altered here) -------
    def ensure_table(self, binding: Binding) -> None:
        """Create a missing table (nothing to fill); a table that does not match the spec raises
        BindingPaused: before, a projection added to the spec made every MERGE fail and every
        document a dead letter. `sophia-tasks flows apply` adds the column and fills it. Callers
        hold ``self._lock``."""
        table = str(binding.table)
        drift = self._checks.cached(table)
        if drift is None:
            live = self._live_columns(table)
            if live is None:
                self._create(binding)
                live = self._live_columns(table) or {}
            drift = table_drift(self.expected_columns(binding), live, self.required_columns(binding))
            self._checks.remember(table, drift)
        if drift:
            raise BindingPaused(self.name, table, drift)

    def _create(self, binding: Binding) -> None:
        cols = [f"{quote_ident(binding.key_column)} VARCHAR NOT NULL PRIMARY KEY",
                '"FLOW_DOCUMENT" VARIANT', '"FLOW_PUBLISHED_AT" TIMESTAMP_TZ']
        cols += [f"{quote_ident(p.column)} {SF_TYPES[p.type]}" for p in binding.projections]
        self._execute(f"CREATE TABLE IF NOT EXISTS {self.table_name(binding)} ({', '.join(cols)})")

    @staticmethod
    def column_type(ptype: str) -> str:
        return SF_TYPES[ptype]

    def expected_columns(self, binding: Binding) -> dict[str, str]:
        """Column -> type as ``live_columns`` names it, for every column the MERGE needs."""
        out = {binding.key_column: "VARCHAR", "FLOW_DOCUMENT": "VARIANT", "FLOW_PUBLISHED_AT": "TIMESTAMP_TZ"}
        out.update((p.column, SF_TYPES[p.type]) for p in binding.projections)
        return out

    @staticmethod
    def required_columns(binding: Binding) -> tuple[str, ...]:
        return (binding.key_column, "FLOW_DOCUMENT", "FLOW_PUBLISHED_AT")

    def _live_columns(self, table: str) -> dict[str, str] | None:
        rows = self._execute("SELECT column_name, data_type, numeric_precision, numeric_scale "
                             "FROM information_schema.columns WHERE table_schema = CURRENT_SCHEMA() "
                             "AND table_name = ?", [table])
        if not rows:
            return None
        out: dict[str, str] = {}
        for name, dtype, precision, scale in rows:
            dtype = str(dtype).upper()
            if dtype == "NUMBER" and precision is not None:
                dtype = f"NUMBER({int(precision)},{int(scale or 0)})"
            out[str(name)] = _SF_SYNONYMS.get(dtype, dtype)
        return out

    def live_columns(self, table: str) -> dict[str, str] | None:
        """The table's columns and types (None: no such table), in SF_TYPES' words."""
        with self._lock:
            return self._live_columns(table)

    def create_table(self, binding: Binding) -> None:
        with self._lock:
            self._create(binding)
            self._checks.forget(str(binding.table))

    def add_columns(self, binding: Binding, projections: list[Projection]) -> None:
        """Add the projections' columns (NULL for now); safe to rerun."""
        with self._lock:
            live = self._live_columns(str(binding.table)) or {}
            for p in projections:
                if p.column not in live:
                    self._execute(f"ALTER TABLE {self.table_name(binding)} ADD COLUMN {quote_ident(p.column)} "
                                  f"{SF_TYPES[p.type]}")
            self._checks.forget(str(binding.table))

    def fill_columns(self, binding: Binding, projections: list[Projection], batch_rows: int = 1000,
                     progress: Callable[[int, int], None] | None = None) -> int:
        """Set ``projections`` on every row from its stored document, with the writes' coercion: a batch
        of rows is read in key order and written back with one MERGE, which leaves alone a row a live
        write replaced in between (another ``FLOW_PUBLISHED_AT``). Answers the rows filled."""
        if not projections:
            return 0
        t = self.table_name(binding)
        key = quote_ident(binding.key_column)
        select = ["f.value:k::VARCHAR AS k", "f.value:p::TIMESTAMP_TZ AS p"]
        select += [f"f.value:x{i}" + ("" if p.type == "object" else f"::{SF_TYPES[p.type]}") + f" AS x{i}"
                   for i, p in enumerate(projections)]
        sets = ", ".join(f"{quote_ident(p.column)} = s.x{i}" for i, p in enumerate(projections))
        merge = (f"MERGE INTO {t} USING (SELECT {', '.join(select)} FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)) f) s "
                 f'ON {t}.{key} = s.k WHEN MATCHED AND {t}."FLOW_PUBLISHED_AT" = s.p THEN UPDATE SET {sets}')
        with self._lock:
            total = int(self._execute(f"SELECT COUNT(*) FROM {t}")[0][0])
        done, filled, last = 0, 0, None
        while True:
            with self._lock:
                if last is None:
                    rows = self._execute(f'SELECT {key}, "FLOW_DOCUMENT" FROM {t} ORDER BY {key} '
                                         f"LIMIT {int(batch_rows)}")
                else:
                    rows = self._execute(f'SELECT {key}, "FLOW_DOCUMENT" FROM {t} WHERE {key} > ? ORDER BY {key} '
                                         f"LIMIT {int(batch_rows)}", [last])
                if not rows:
                    break
                items = []
                for k, raw in rows:
                    doc = orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw
                    item: dict[str, Any] = {"k": k, "p": version_of(doc)}
                    for i, value in enumerate(project(doc, projections)):
                        item[f"x{i}"] = value
                    items.append(orjson.dumps(item))
                for chunk in _chunks(items, MAX_BIND_BYTES):
                    res = self._execute(merge, [(b"[" + b",".join(chunk) + b"]").decode()])
                    filled += int(res[0][0] or 0) if res and res[0] else len(chunk)
            last = rows[-1][0]
            done += len(rows)
            if progress is not None:
                progress(done, max(total, done))
        return filled

    def manual_type_change(self, binding: Binding, column: str, ptype: str) -> str:
        """The operator's step for a changed type: drop the column, and `flows apply` adds it back
        with the new type and fills it from the stored documents (the writes' coercion)."""
        return f"ALTER TABLE {self.table_name(binding)} DROP COLUMN {quote_ident(column)};"

    @staticmethod
    def manual_drop(table: str) -> str:
        return f"DROP TABLE {quote_ident(table)};"

    def ensure_tombstones(self) -> None:
        """The versions of hard-deleted keys, per table: an upsert older than its key's delete is stale."""
        if TOMBSTONES in self._ready:
            return
        self._execute(f'CREATE TABLE IF NOT EXISTS {quote_ident(TOMBSTONES)} ("TARGET" VARCHAR NOT NULL, '
                      '"KEY" VARCHAR NOT NULL, "VERSION" TIMESTAMP_TZ NOT NULL, "DELETED_AT" TIMESTAMP_TZ)')
        self._ready.add(TOMBSTONES)

    def delete_statements(self, binding: Binding) -> tuple[str, str]:
        """Record the tombstones (the newest version wins), then delete the rows no newer than them."""
        t = self.table_name(binding)
        key = quote_ident(binding.key_column)
        tomb = quote_ident(TOMBSTONES)
        source = ("SELECT f.value:k::VARCHAR AS K, f.value:p::TIMESTAMP_TZ AS P "
                  "FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)) f")
        target = quote_literal(str(binding.table))
        record = (
            f"MERGE INTO {tomb} USING ({source}) s ON {tomb}.\"TARGET\" = {target} AND {tomb}.\"KEY\" = s.K "
            f'WHEN MATCHED AND s.P > {tomb}."VERSION" THEN UPDATE SET "VERSION" = s.P, '
            '"DELETED_AT" = CURRENT_TIMESTAMP() '
            f'WHEN NOT MATCHED THEN INSERT ("TARGET", "KEY", "VERSION", "DELETED_AT") '
            f"VALUES ({target}, s.K, s.P, CURRENT_TIMESTAMP())")
        delete = f'DELETE FROM {t} USING ({source}) s WHERE {t}.{key} = s.K AND {t}."FLOW_PUBLISHED_AT" <= s.P'
        return record, delete

    def merge_statement(self, binding: Binding) -> str:
        t = self.table_name(binding)
        key = quote_ident(binding.key_column)
        proj = [(quote_ident(p.column), p.type, f"x{i}") for i, p in enumerate(binding.projections)]
        select = [f"f.value:k::VARCHAR AS {key}", 'f.value:d AS "FLOW_DOCUMENT"',
                  'f.value:p::TIMESTAMP_TZ AS "FLOW_PUBLISHED_AT"']
        select += [f"f.value:{alias}" + ("" if ptype == "object" else f"::{SF_TYPES[ptype]}") + f" AS {col}"
                   for col, ptype, alias in proj]
        names = [key, '"FLOW_DOCUMENT"', '"FLOW_PUBLISHED_AT"'] + [c for c, _, _ in proj]
        updates = ", ".join(f"{n} = s.{n}" for n in names[1:])
        unless_deleted = "" if binding.soft_delete else (
            f' WHERE NOT EXISTS (SELECT 1 FROM {quote_ident(TOMBSTONES)} d WHERE d."TARGET" = '
            f'{quote_literal(str(binding.table))} '
            'AND d."KEY" = f.value:k::VARCHAR AND d."VERSION" >= f.value:p::TIMESTAMP_TZ)')
        return (
            f"MERGE INTO {t} USING (SELECT {', '.join(select)} "
            f"FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)) f{unless_deleted}) s ON {t}.{key} = s.{key} "
            f'WHEN MATCHED AND s."FLOW_PUBLISHED_AT" >= {t}."FLOW_PUBLISHED_AT" THEN UPDATE SET {updates} '
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({', '.join('s.' + n for n in names)})"
        )

    def write_batch(self, binding: Binding, documents: list[dict[str, Any]]) -> WriteResult:
        pairs, bad = keyed(self.spec, binding, documents)
        pairs = latest_per_key(pairs)
        result = WriteResult(keyless=list(bad))
        if not pairs:
            return result
        deletes: list[bytes] = []
        if not binding.soft_delete:  # with soft deletes the delete document is the row
            deletes = [orjson.dumps({"k": key, "p": version_of(doc)}) for key, doc in pairs if is_delete(doc)]
            if deletes:
                pairs = [(key, doc) for key, doc in pairs if not is_delete(doc)]
        rows = []
        for key, doc in pairs:
            # The document's text as the pipeline already has it (``documents.encoded``): no second encode.
            row: dict[str, Any] = {"k": key, "d": orjson.Fragment(encoded(doc)), "p": version_of(doc)}
            for i, value in enumerate(project(doc, binding.projections)):
                row[f"x{i}"] = value
            rows.append(orjson.dumps(row))
        with self._lock:
            self.ensure_table(binding)
            if not binding.soft_delete:
                self.ensure_tombstones()
            statement = self.merge_statement(binding)
            for chunk in _chunks(rows, MAX_BIND_BYTES):
                payload = (b"[" + b",".join(chunk) + b"]").decode()
                res = self._execute(statement, [payload])
                if res and len(res[0]) >= 2:
                    result.written += int(res[0][0] or 0) + int(res[0][1] or 0)
                else:
                    result.written += len(chunk)
            if deletes:
                record, delete = self.delete_statements(binding)
                for chunk in _chunks(deletes, MAX_BIND_BYTES):
                    payload = (b"[" + b",".join(chunk) + b"]").decode()
                    self._execute(record, [payload])
                    res = self._execute(delete, [payload])
                    result.written += int(res[0][0] or 0) if res and res[0] else 0
        result.skipped_stale = len(rows) + len(deletes) - result.written
        return result

    def purge_tombstones(self, binding: Binding, days: int) -> int:
        """Tombstones only guard against late, older upserts; after the journal's window none can come."""
        with self._lock:
            self.ensure_tombstones()
            target = quote_literal(str(binding.table))
            res = self._execute(f'DELETE FROM {quote_ident(TOMBSTONES)} WHERE "TARGET" = {target} '
                                f'AND "DELETED_AT" < DATEADD(day, -{int(days)}, CURRENT_TIMESTAMP())')
            return int(res[0][0] or 0) if res and res[0] else 0

    def count(self, binding: Binding) -> int:
        with self._lock:
            self.ensure_table(binding)
            return int(self._execute(f"SELECT COUNT(*) FROM {self.table_name(binding)}")[0][0])

    def fetch(self, binding: Binding, key: str) -> dict[str, Any] | None:
        with self._lock:
            self.ensure_table(binding)
            rows = self._execute(
                f'SELECT "FLOW_DOCUMENT" FROM {self.table_name(binding)} WHERE {quote_ident(binding.key_column)} = ?',
                [key])
        if not rows:
            return None
        value = rows[0][0]
        return orjson.loads(value) if isinstance(value, (str, bytes)) else value

    # -- erasure ----------------------------------------------------------------------
    #: Keys per statement of an erasure (bound as one JSON array).
    erase_batch = 1000

    def erase(self, binding: Binding, keys: list[str]) -> int:
        """One ``DELETE`` per batch of keys, the keys bound as one JSON array: a hard delete."""
        return self._per_batch(binding, keys, "DELETE FROM {table} WHERE {key} IN ({keys})")

    def count_keys(self, binding: Binding, keys: list[str]) -> int:
        return self._per_batch(binding, keys, "SELECT COUNT(*) FROM {table} WHERE {key} IN ({keys})")

    def _per_batch(self, binding: Binding, keys: list[str], statement: str) -> int:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return 0
        query = statement.format(table=self.table_name(binding), key=quote_ident(binding.key_column),
                                 keys="SELECT f.value::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(?))) f")
        total = 0
        with self._lock:
            self.ensure_table(binding)
            for start in range(0, len(unique), self.erase_batch):
                rows = self._execute(query, [orjson.dumps(unique[start:start + self.erase_batch]).decode()])
                total += int(rows[0][0] or 0) if rows else 0
        return total

    def search(self, binding: Binding, address: str) -> list[str]:
        """Rows whose document, cast to VARCHAR, holds the address (``ILIKE``), confirmed in Python."""
        from sophia_tasks.core.addresses import AddressMatcher, like_pattern

        matcher = AddressMatcher(address)
        with self._lock:
            self.ensure_table(binding)
            text = 'TO_VARCHAR("FLOW_DOCUMENT")'
            rows = self._execute(
                f"SELECT {quote_ident(binding.key_column)}, {text} FROM {self.table_name(binding)} "
                f"WHERE {text} ILIKE ? ESCAPE '!'", [like_pattern(address)])
        found = []
        for key, text in rows:
            document = orjson.loads(text) if isinstance(text, (str, bytes)) else text
            if matcher.names(document):
                found.append(str(key))
        return found

    def close(self) -> None:
        self._discard()


def _chunks(rows: list[bytes], limit: int) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for row in rows:
        if current and size + len(row) + 1 > limit:
            out.append(current)
            current, size = [], 0
        current.append(row)
        size += len(row) + 1
    if current:
        out.append(current)
    return out


@register("snowflake", check_table_resource)
def factory(settings: Settings, spec: FlowSpec) -> SnowflakeMaterializer:
    return SnowflakeMaterializer(settings, spec)
