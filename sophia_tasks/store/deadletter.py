"""The dead-letter store (PostgreSQL): what no stage could handle, with why.

Redis has no dead-letter exchange and Estuary refuses bad records outright
(flow#2045); here every letter keeps its payload, the stage it failed at, the
target, every error and the attempts, so ``dlq replay`` puts it back where it fell.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

import psycopg2.extras
from psycopg2 import sql

from sophia_tasks.store.db import Connections, connections, jsonb_text
from sophia_tasks.store.sealing import Sealer

STAGES = ("validate", "derive", "materialize")


@dataclass
class Letter:
    stage: str
    collection: str
    payload: dict[str, Any]
    error: str
    target: str | None = None
    document_key: str | None = None
    event_id: str | None = None
    details: Any = None
    attempts: int = 1


@dataclass
class StoredLetter(Letter):
    id: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    status: str = "pending"
    replayed_at: datetime | None = None
    replay_count: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "stage": self.stage, "target": self.target, "collection": self.collection,
            "document_key": self.document_key, "event_id": self.event_id, "error": self.error,
            "attempts": self.attempts, "status": self.status,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "replayed_at": self.replayed_at.isoformat() if self.replayed_at else None,
            "replay_count": self.replay_count,
        }

    def full(self) -> dict[str, Any]:
        return dict(self.summary(), details=self.details, payload=self.payload)


_COLUMNS = ("id", "stage", "target", "collection", "document_key", "event_id", "payload", "error", "details",
            "attempts", "status", "created_at", "updated_at", "replayed_at", "replay_count")


class DeadLetterStore:
    """Payloads and details are sealed at rest when ``sealer`` has a key, and opened when read."""

    def __init__(self, dsn: str, conns: Connections = connections, sealer: Sealer | None = None) -> None:
        self.dsn = dsn
        self.conns = conns
        self.sealer = sealer or Sealer(())

    def _seal(self, value: Any) -> str:
        return self.sealer.seal_text(jsonb_text(value))

    def record(self, letters: Iterable[Letter]) -> int:
        rows = [(letter.stage, letter.target, letter.collection, letter.document_key, letter.event_id,
                 self._seal(letter.payload), letter.error[:20000],
                 self._seal(letter.details) if letter.details is not None else None, letter.attempts)
                for letter in letters]
        if not rows:
            return 0
        with self.conns.transaction(self.dsn) as cur:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO sophia_dead_letters (stage, target, collection, document_key, event_id, payload, "
                "error, details, attempts) VALUES %s",
                rows, template="(%s, %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s)", page_size=len(rows))
        return len(rows)

    def _where(self, status: str | None, stage: str | None, target: str | None,
               older_than_seconds: float | None, newer_than_seconds: float | None,
               ids: list[int] | None) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = []
        params: list[Any] = []
        if status and status != "all":
            clauses.append(sql.SQL("status = %s"))
            params.append(status)
        if stage:
            clauses.append(sql.SQL("stage = %s"))
            params.append(stage)
        if target:
            clauses.append(sql.SQL("target = %s"))
            params.append(target)
        if older_than_seconds is not None:
            clauses.append(sql.SQL("created_at < now() - make_interval(secs => %s)"))
            params.append(older_than_seconds)
        if newer_than_seconds is not None:
            clauses.append(sql.SQL("created_at >= now() - make_interval(secs => %s)"))
            params.append(newer_than_seconds)
        if ids is not None:
            clauses.append(sql.SQL("id = ANY(%s)"))
            params.append(list(ids))
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
        return where, params

    def list(self, status: str | None = "pending", stage: str | None = None, target: str | None = None,
             older_than_seconds: float | None = None, newer_than_seconds: float | None = None,
             ids: list[int] | None = None, limit: int | None = 100) -> list[StoredLetter]:
        where, params = self._where(status, stage, target, older_than_seconds, newer_than_seconds, ids)
        query = sql.SQL("SELECT {} FROM sophia_dead_letters").format(
            sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))) + where + sql.SQL(" ORDER BY id")
        if limit:
            query += sql.SQL(" LIMIT %s")
            params.append(limit)
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(query, params)
            letters = [StoredLetter(**dict(zip(_COLUMNS, row, strict=True))) for row in cur.fetchall()]
        for letter in letters:
            letter.payload = self.sealer.open(letter.payload)
            letter.details = self.sealer.open(letter.details)
        return letters

    def for_events(self, event_ids: list[str]) -> list[StoredLetter]:
        """Every letter (any status) of these events, oldest first: what `sophia-tasks trace` joins."""
        if not event_ids:
            return []
        query = sql.SQL("SELECT {} FROM sophia_dead_letters WHERE event_id = ANY(%s) ORDER BY id").format(
            sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)))
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(query, (list(event_ids),))
            letters = [StoredLetter(**dict(zip(_COLUMNS, row, strict=True))) for row in cur.fetchall()]
        for letter in letters:
            letter.details = self.sealer.open(letter.details)
        return letters

    def get(self, letter_id: int) -> StoredLetter | None:
        found = self.list(status=None, ids=[letter_id], limit=1)
        return found[0] if found else None

    def count(self, status: str | None = "pending") -> int:
        where, params = self._where(status, None, None, None, None, None)
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM sophia_dead_letters") + where, params)
            return int(cur.fetchone()[0])

    def mark_replayed(self, ids: list[int]) -> None:
        if not ids:
            return
        with self.conns.transaction(self.dsn) as cur:
            cur.execute("UPDATE sophia_dead_letters SET status = 'replayed', replayed_at = now(), updated_at = now(), "
                        "replay_count = replay_count + 1 WHERE id = ANY(%s)", (ids,))

    def purge(self, status: str | None = None, stage: str | None = None, target: str | None = None,
              older_than_seconds: float | None = None, ids: list[int] | None = None) -> int:
        where, params = self._where(status, stage, target, older_than_seconds, None, ids)
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(sql.SQL("DELETE FROM sophia_dead_letters") + where, params)
            return cur.rowcount

    def replace_payload(self, letter_id: int, fixed: Any) -> None:
        """Swap in a corrected document, keeping the envelope or ``_meta`` the pipeline needs."""
        letter = self.get(letter_id)
        if letter is None:
            raise KeyError(letter_id)
        payload = dict(letter.payload)
        if letter.stage == "validate" and "document" in payload:
            payload["document"] = fixed.get("document", fixed) if isinstance(fixed, dict) and "event_id" in fixed \
                else fixed
        elif isinstance(fixed, dict):
            payload = {"_meta": letter.payload.get("_meta", {}), **{k: v for k, v in fixed.items() if k != "_meta"}}
        else:
            raise ValueError("a derive or materialize letter's payload must be a JSON object")
        with self.conns.transaction(self.dsn) as cur:
            cur.execute("UPDATE sophia_dead_letters SET payload = %s::jsonb, updated_at = now() WHERE id = %s",
                        (self._seal(payload), letter_id))
