"""Seal the stored payloads again with the first of SOPHIA_DATA_KEYS (``sophia-tasks keys rotate``).

Rows sealed under an older key, and rows written in clear before a key was set, are read,
opened and sealed with the first key, a batch at a time, each batch its own transaction, so a
rotation can be stopped and run again. Rows already sealed with the first key are left alone.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import psycopg2.extras

from sophia_tasks.settings import Settings
from sophia_tasks.store.db import connections, jsonb_text
from sophia_tasks.store.journal import TABLE as JOURNAL
from sophia_tasks.store.journal import ensure_journal
from sophia_tasks.store.sealing import Sealer, sealer_for

log = logging.getLogger(__name__)


@dataclass
class RekeySummary:
    store: str
    seen: int = 0
    resealed: int = 0

    def line(self) -> str:
        return f"{self.store}: {self.resealed} of {self.seen} row(s) sealed with the first key"


def _column_type(cur: Any, table: str, column: str) -> str:
    cur.execute("SELECT data_type FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
                (table, column))
    row = cur.fetchone()
    return str(row[0]) if row else "json"


def reseal_journal(settings: Settings, sealer: Sealer | None = None, batch_size: int = 500,
                   progress: Callable[[RekeySummary], None] | None = None) -> RekeySummary:
    sealer = sealer or sealer_for(settings)
    summary = RekeySummary("journal")
    if not sealer.enabled:
        return summary
    dsn = settings.postgres_dsn
    after: tuple[Any, str] | None = None
    while True:
        with connections.transaction(dsn) as cur:
            ensure_journal(cur, dsn)
            kind = _column_type(cur, JOURNAL, "event")
            if after is None:
                cur.execute(f"SELECT received_at, event_id, event FROM {JOURNAL} "
                            "ORDER BY received_at, event_id LIMIT %s", (batch_size,))
            else:
                cur.execute(f"SELECT received_at, event_id, event FROM {JOURNAL} WHERE (received_at, event_id) > "
                            "(%s, %s) ORDER BY received_at, event_id LIMIT %s", (*after, batch_size))
            rows = cur.fetchall()
            if not rows:
                return summary
            after = (rows[-1][0], rows[-1][1])
            changed = [(received, event_id, sealer.seal_text(jsonb_text(sealer.open(event))))
                       for received, event_id, event in rows if sealer.needs_resealing(event)]
            if changed:
                psycopg2.extras.execute_values(
                    cur, f"UPDATE {JOURNAL} AS j SET event = v.event::{kind} FROM (VALUES %s) AS v(received_at, "
                         "event_id, event) WHERE j.received_at = v.received_at AND j.event_id = v.event_id",
                    changed, template="(%s::timestamptz, %s, %s)", page_size=len(changed))
        summary.seen += len(rows)
        summary.resealed += len(changed)
        if progress:
            progress(summary)


def reseal_dead_letters(settings: Settings, sealer: Sealer | None = None, batch_size: int = 500,
                        progress: Callable[[RekeySummary], None] | None = None) -> RekeySummary:
    sealer = sealer or sealer_for(settings)
    summary = RekeySummary("dead letters")
    if not sealer.enabled:
        return summary
    last_id = 0
    while True:
        with connections.transaction(settings.postgres_dsn) as cur:
            cur.execute("SELECT id, payload, details FROM sophia_dead_letters WHERE id > %s ORDER BY id LIMIT %s",
                        (last_id, batch_size))
            rows = cur.fetchall()
            if not rows:
                return summary
            last_id = rows[-1][0]
            changed = []
            for letter_id, payload, details in rows:
                if sealer.needs_resealing(payload) or (details is not None and sealer.needs_resealing(details)):
                    changed.append((letter_id, sealer.seal_text(jsonb_text(sealer.open(payload))),
                                    None if details is None else sealer.seal_text(jsonb_text(sealer.open(details)))))
            if changed:
                psycopg2.extras.execute_values(
                    cur, "UPDATE sophia_dead_letters AS d SET payload = v.payload::jsonb, details = v.details::jsonb, "
                         "updated_at = now() FROM (VALUES %s) AS v(id, payload, details) WHERE d.id = v.id",
                    changed, template="(%s::bigint, %s, %s)", page_size=len(changed))
        summary.seen += len(rows)
        summary.resealed += len(changed)
        if progress:
            progress(summary)
