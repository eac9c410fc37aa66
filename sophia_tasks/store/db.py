"""PostgreSQL plumbing shared by the staging target, the dead-letter store and the CLI."""
from __future__ import annotations

import logging
import os
import re
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from sophia_tasks.core.documents import encoded
from sophia_tasks.core.process import ProcessLocal

log = logging.getLogger(__name__)

_created: set[str] = set()
_lock = threading.Lock()

SERVICE_SCHEMA = """
CREATE TABLE IF NOT EXISTS sophia_dead_letters (
    id           bigserial PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    stage        text NOT NULL,
    target       text,
    collection   text NOT NULL,
    document_key text,
    event_id     text,
    payload      jsonb NOT NULL,
    error        text NOT NULL,
    details      jsonb,
    attempts     integer NOT NULL DEFAULT 1,
    status       text NOT NULL DEFAULT 'pending',
    replayed_at  timestamptz,
    replay_count integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sophia_dead_letters_status_idx ON sophia_dead_letters (status, stage, target);
CREATE INDEX IF NOT EXISTS sophia_dead_letters_event_idx ON sophia_dead_letters (event_id);
"""


def ensure_database(dsn: str) -> None:
    """Create the database named in the DSN if it is missing (the contract says so)."""
    if dsn in _created:
        return
    params = psycopg2.extensions.parse_dsn(dsn)
    dbname = params.get("dbname")
    try:
        psycopg2.connect(dsn, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        if not dbname or "does not exist" not in str(exc):
            raise
        admin = dict(params, dbname="postgres")
        conn = psycopg2.connect(**admin, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except psycopg2.errors.DuplicateDatabase:
            pass
        finally:
            conn.close()
    _created.add(dsn)


def connect(dsn: str) -> psycopg2.extensions.connection:
    ensure_database(dsn)
    conn = psycopg2.connect(dsn, connect_timeout=5, application_name=f"sophia-tasks:{os.getpid()}")
    prefer_lz4(conn)
    return conn


def prefer_lz4(conn: psycopg2.extensions.connection) -> bool:
    """Compress this session's large values (documents, journaled events) with lz4, not pglz.

    Why: our documents are 4-6 KB of JSON, so PostgreSQL TOAST-compresses every one; pglz
    cost ~70 us of server CPU per row in a 500-row upsert, lz4 less than half of that
    (measured in docs/benchmarks.md). Columns keep whatever they hold; reads are unchanged. A
    server built without lz4 refuses the setting and keeps pglz.
    """
    try:
        with conn.cursor() as cur:
            cur.execute("SET default_toast_compression = 'lz4'")
        conn.commit()
        return True
    except psycopg2.Error as exc:
        conn.rollback()
        log.info("PostgreSQL keeps pglz compression (%s)", str(exc).strip())
        return False


def ensure_service_schema(conn: psycopg2.extensions.connection) -> None:
    with conn.cursor() as cur:
        # Serialise concurrent first starts of several workers.
        cur.execute("SELECT pg_advisory_xact_lock(72177301)")
        cur.execute(SERVICE_SCHEMA)
    conn.commit()


class Connections:
    """One lazily opened connection per process per DSN, replaced when it breaks.

    Celery's prefork children each open their own after the fork; a broken
    connection (server restart, pg_terminate_backend) is dropped so the next
    attempt reconnects instead of failing forever.
    """

    def __init__(self) -> None:
        self._conns: ProcessLocal[str, psycopg2.extensions.connection] = ProcessLocal()

    def get(self, dsn: str) -> psycopg2.extensions.connection:
        conn = self._conns.get(dsn)
        if conn is None or conn.closed:
            conn = connect(dsn)
            ensure_service_schema(conn)
            self._conns.set(dsn, conn)
        return conn

    def discard(self, dsn: str) -> None:
        conn = self._conns.pop(dsn)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - closing a dead socket
                pass

    @contextmanager
    def transaction(self, dsn: str) -> Iterator[psycopg2.extensions.cursor]:
        conn = self.get(dsn)
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException as exc:
            try:
                conn.rollback()
            except Exception:
                self.discard(dsn)
            if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
                self.discard(dsn)
            raise


connections = Connections()

# jsonb refuses \u0000; an escaped backslash before it (\\u0000) is literal text and stays.
_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def jsonb_text(value: Any) -> str:
    raw = encoded(value)
    if b"\\u0000" in raw:
        raw = _NUL.sub(rb"\1\\ufffd", raw)
    return raw.decode()
