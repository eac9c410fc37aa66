"""The event journal: every event that entered the chain, kept in PostgreSQL.

Why: a target can be lost (a dropped table, a flushed Redis, a new Snowflake
account); ``sophia-tasks rebuild --target X`` then re-materializes it from here
instead of asking the source again (a sales-call API allows 10,000 requests a day). The validate task
calls :func:`append_events` for every batch before it moves on.

Layout: ``sophia_journal`` is range-partitioned by day on ``received_at``
(``sophia_journal_pYYYYMMDD``), partitions created on demand; the retention purge
drops whole partitions older than the flow spec's ``journal.retention_days``, so
pruning costs a ``DROP TABLE``, never a big ``DELETE``.

Idempotence: the key is ``(event_id, received_at)`` (a partitioned table's unique
key must hold the partition key), and a rebuild replays each event id once. A
redelivered batch, a rebuild (which republishes the journaled event unchanged) or a
dead-letter replay all hit the conflict rule and change nothing; when the replayed
event's document *differs* (``dlq replay --payload`` fixed it) the journal takes the
fixed document, so the next rebuild replays the fix, not the poison. Rebuild events
are not special-cased (no "skip source=rebuild"): the conflict rule covers them.

Column type: ``event`` is ``json`` (the text as received, checked for syntax), not
``jsonb``. Nothing queries inside journaled events on the hot path, and parsing every
~5 KB event into ``jsonb`` cost PostgreSQL 230 us of CPU per row against 95-100 us for
``json`` (500-row inserts, lz4), on every event the pipeline accepts. A journal created
as ``jsonb`` by an earlier version keeps working unchanged: the insert leaves the value
untyped, so PostgreSQL coerces it to whichever type the column has, and the conflict
rule compares text. Converting one is optional (``docs/operations.md``).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator

import orjson
import psycopg2
import psycopg2.errors
import psycopg2.extras
from psycopg2 import sql

from sophia_tasks.core.documents import parse_time, utcnow
from sophia_tasks.core.process import ProcessLocal
from sophia_tasks.store.db import connect, connections, jsonb_text
from sophia_tasks.store.sealing import Sealer

log = logging.getLogger(__name__)

TABLE = "sophia_journal"
PARTITION_PREFIX = f"{TABLE}_p"
_LOCK_KEY = 72177302  # pg_advisory_xact_lock key serialising journal DDL across workers

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    event_id     text NOT NULL,
    received_at  timestamptz NOT NULL,
    collection   text NOT NULL,
    published_at text,
    source       text,
    lane         text NOT NULL DEFAULT 'live',
    is_test      boolean NOT NULL DEFAULT false,
    event        json NOT NULL,
    journaled_at timestamptz NOT NULL DEFAULT now(),
    event_sha256 text,
    PRIMARY KEY (event_id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX IF NOT EXISTS {TABLE}_received_idx ON {TABLE} (received_at);
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS event_sha256 text;
"""

_INSERT = f"""
INSERT INTO {TABLE} AS j (event_id, received_at, collection, published_at, source, lane, is_test, event,
                          event_sha256)
VALUES %s
ON CONFLICT (event_id, received_at) DO UPDATE
   SET event = EXCLUDED.event, published_at = EXCLUDED.published_at, journaled_at = now(),
       event_sha256 = EXCLUDED.event_sha256
 WHERE j.event_sha256 IS DISTINCT FROM EXCLUDED.event_sha256
"""

# Per process (Celery children fork): which DSNs have the parent table, which days a partition.
_ready: ProcessLocal[str, bool] = ProcessLocal()
_partitions: ProcessLocal[tuple[str, date], bool] = ProcessLocal()


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def ensure_journal(cur: Any, dsn: str) -> None:
    """Create the partitioned parent table once per process (idempotent DDL under a lock)."""
    if dsn in _ready:
        return
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    cur.execute(_SCHEMA)
    _ready.set(dsn, True)


def ensure_partitions(cur: Any, dsn: str, days: set[date]) -> None:
    """Create the day partitions these rows need; concurrent workers serialise on one advisory lock."""
    missing = sorted(d for d in days if (dsn, d) not in _partitions)
    if not missing:
        return
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    for day in missing:
        start, end = _day_bounds(day)
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM (%s) TO (%s)").format(
            sql.Identifier(partition_name(day)), sql.Identifier(TABLE)), (start, end))
    for day in missing:
        _partitions.set((dsn, day), True)


def _forget(dsn: str) -> None:
    """Drop this process's DDL caches (a partition was purged or the table dropped under us)."""
    _ready.pop(dsn)
    for item in [p for p in _partitions.keys() if p[0] == dsn]:
        _partitions.pop(item)


def _event_id(event: Mapping[str, Any]) -> str:
    value = event.get("event_id")
    if isinstance(value, str) and value:
        return value
    return hashlib.sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def journal_rows(events: list[Any], lane: str, now: datetime | None = None,
                 sealer: Sealer | None = None) -> list[tuple[Any, ...]]:
    """Rows for one multi-row insert: one per (event_id, received_at), the last one winning.

    Non-objects are left out (they cannot be replayed; the validate stage dead-letters
    them with their payload). An event without ``received_at`` is journaled at ``now``.
    The event is sealed when ``sealer`` has a key; its SHA-256 (of the clear text) decides
    whether a second copy changes the row, since two seals of one event never match.
    """
    now = now or utcnow()
    rows: dict[tuple[str, datetime], tuple[Any, ...]] = {}
    for event in events:
        if type(event) is not dict and not isinstance(event, Mapping):
            continue
        received = parse_time(event.get("received_at")) or now
        event_id = _event_id(event)
        text = jsonb_text(event if type(event) is dict else dict(event))
        rows[(event_id, received)] = (
            event_id, received, str(event.get("collection") or ""), event.get("published_at"),
            event.get("source"), lane, bool(event.get("is_test")),
            sealer.seal_text(text) if sealer is not None else text,
            hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
    return list(rows.values())


def append_events(dsn: str, events: list[dict[str, Any]], lane: str, sealer: Sealer | None = None) -> None:
    """Journal a batch durably: one multi-row insert, committed before the chain moves on."""
    write_rows(dsn, journal_rows(events, lane, sealer=sealer))


def write_rows(dsn: str, rows: list[tuple[Any, ...]]) -> int:
    if not rows:
        return 0
    days = {r[1].astimezone(timezone.utc).date() for r in rows}
    for attempt in (1, 2):
        try:
            with connections.transaction(dsn) as cur:
                ensure_journal(cur, dsn)
                ensure_partitions(cur, dsn, days)
                psycopg2.extras.execute_values(
                    cur, _INSERT, rows, template="(%s, %s, %s, %s, %s, %s, %s, %s, %s)", page_size=len(rows))
                return len(rows)
        except (psycopg2.errors.CheckViolation, psycopg2.errors.UndefinedTable,
                psycopg2.OperationalError, psycopg2.InterfaceError):
            # "no partition of relation found for row" (purged day), the table dropped, or a
            # connection the server closed (restart, pg_terminate_backend; transaction() has
            # discarded it): forget what this process thought existed and try again, once.
            # The insert is idempotent, so a retry after an unknown outcome is safe.
            _forget(dsn)
            if attempt == 2:
                raise
        except BaseException:
            _forget(dsn)  # the DDL of a rolled-back transaction never happened
            raise
    return 0  # pragma: no cover - the loop returns or raises


# -- retention ----------------------------------------------------------------------------
def list_partitions(cur: Any) -> list[tuple[str, date]]:
    cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s ORDER BY c.relname", (TABLE,))
    out = []
    for (name,) in cur.fetchall():
        suffix = name[len(PARTITION_PREFIX):] if name.startswith(PARTITION_PREFIX) else ""
        try:
            out.append((name, datetime.strptime(suffix, "%Y%m%d").date()))
        except ValueError:
            continue
    return out


def purge_expired(dsn: str, retention_days: int, now: datetime | None = None) -> list[str]:
    """Drop the day partitions that end before ``now - retention_days``; answer their names."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    dropped: list[str] = []
    with connections.transaction(dsn) as cur:
        ensure_journal(cur, dsn)
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        for name, day in list_partitions(cur):
            if _day_bounds(day)[1] <= cutoff:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                dropped.append(name)
    if dropped:
        _forget(dsn)
        log.info("journal: dropped %d partition(s) older than %d day(s): %s", len(dropped), retention_days,
                 ", ".join(dropped))
    return dropped


# -- reading it back ------------------------------------------------------------------------
def _where(since: datetime | None, until: datetime | None, collections: list[str] | None,
           include_tests: bool) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if since is not None:
        clauses.append(sql.SQL("received_at >= %s"))
        params.append(since)
    if until is not None:
        clauses.append(sql.SQL("received_at < %s"))
        params.append(until)
    if collections is not None:
        clauses.append(sql.SQL("collection = ANY(%s)"))
        params.append(list(collections))
    if not include_tests:
        clauses.append(sql.SQL("NOT is_test"))
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
    return where, params


def count_events(dsn: str, since: datetime | None = None, until: datetime | None = None,
                 collections: list[str] | None = None, include_tests: bool = False) -> int:
    """Distinct event ids in the range: what a rebuild replays."""
    where, params = _where(since, until, collections, include_tests)
    with connections.transaction(dsn) as cur:
        ensure_journal(cur, dsn)
        cur.execute(sql.SQL("SELECT count(DISTINCT event_id) FROM {}").format(sql.Identifier(TABLE)) + where,
                    params)
        return int(cur.fetchone()[0])


def events_by_id(dsn: str, event_ids: list[str], since: datetime | None = None,
                 sealer: Sealer | None = None) -> list[dict[str, Any]]:
    """The journal rows of these event ids (newest receipt first), each with its event opened:
    what `sophia-tasks trace` joins. ``since`` bounds the partitions read."""
    if not event_ids:
        return []
    clauses = "event_id = ANY(%s)" + (" AND received_at >= %s" if since is not None else "")
    params: list[Any] = [list(event_ids)] + ([since] if since is not None else [])
    with connections.transaction(dsn) as cur:
        ensure_journal(cur, dsn)
        cur.execute(sql.SQL("SELECT event_id, received_at, collection, published_at, source, lane, is_test, "
                            "journaled_at, event FROM {} WHERE ").format(sql.Identifier(TABLE))
                    + sql.SQL(clauses) + sql.SQL(" ORDER BY received_at DESC"), params)
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    for row in rows:
        event = row["event"]
        if isinstance(event, str):
            event = orjson.loads(event)
        row["event"] = sealer.open(event) if sealer is not None else event
    return rows


def iter_batches(dsn: str, batch_size: int = 500, since: datetime | None = None, until: datetime | None = None,
                 collections: list[str] | None = None, include_tests: bool = False,
                 sealer: Sealer | None = None) -> Iterator[list[dict[str, Any]]]:
    """The journaled events in received order, ``batch_size`` at a time, through a server-side cursor.

    One event per event id: the journal can hold an id twice (the same item delivered
    again after the dedupe window, or a backfill batch re-published after a crash,
    each with its own ``received_at``); the latest journaled copy is replayed.
    Its own connection: a named cursor lives in a transaction that must not hold the
    shared one (and the snapshot keeps a rebuild consistent while new events arrive).
    """
    where, params = _where(since, until, collections, include_tests)
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            ensure_journal(cur, dsn)
        conn.commit()
        with conn.cursor(name="sophia_journal_rebuild") as cur:
            cur.itersize = batch_size
            cur.execute(sql.SQL("SELECT event FROM (SELECT DISTINCT ON (event_id) event_id, received_at, event "
                                "FROM {}").format(sql.Identifier(TABLE)) + where
                        + sql.SQL(" ORDER BY event_id, journaled_at DESC, received_at DESC) latest "
                                  "ORDER BY received_at, event_id"), params)
            while True:
                rows = cur.fetchmany(batch_size)
                if not rows:
                    break
                yield [sealer.open(r[0]) if sealer is not None else r[0] for r in rows]
        conn.commit()
    finally:
        conn.close()
