"""The erasure audit (``sophia_erasures``): who erased whom, when, and how much, without the address.

Why a table of its own: an erasure must be provable later (GDPR article 17 requests are
answered with a date), yet the audit must not keep the personal data it erased. So a row keeps
the SHA-256 of the normalized address (``core.addresses.address_hash``): whoever holds the
address can find its rows, nobody can read an address out of them.

A row is written when the erasure starts (``status = running``) and completed when it ends
(``done`` or ``failed``, with the counts per store), so an erasure that crashed halfway is still
on record. A run that deletes also keeps the documents' keys it erased per collection (call ids:
no address, no content), so that a later run for the same address erases them again: a document
that was in flight during the first run and landed after it is masked, so nothing else would find it.
"""
from __future__ import annotations

from typing import Any

import orjson

from sophia_tasks.store.db import Connections, connections

TABLE = "sophia_erasures"

_SCHEMA = f"""
SELECT pg_advisory_xact_lock(72177303);
CREATE TABLE IF NOT EXISTS {TABLE} (
    id           bigserial PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    requested_by text NOT NULL,
    email_sha256 text NOT NULL,
    dry_run      boolean NOT NULL,
    status       text NOT NULL DEFAULT 'running',
    counts       jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    total        bigint NOT NULL DEFAULT 0,
    errors       jsonb,
    keys         jsonb
);
CREATE INDEX IF NOT EXISTS {TABLE}_email_idx ON {TABLE} (email_sha256);
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS keys jsonb;
"""


class ErasureAudit:
    def __init__(self, dsn: str, conns: Connections = connections) -> None:
        self.dsn = dsn
        self.conns = conns

    def start(self, requested_by: str, email_sha256: str, dry_run: bool) -> int:
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(_SCHEMA)
            cur.execute(f"INSERT INTO {TABLE} (requested_by, email_sha256, dry_run) VALUES (%s, %s, %s) RETURNING id",
                        (requested_by, email_sha256, dry_run))
            return int(cur.fetchone()[0])

    def finish(self, audit_id: int, counts: dict[str, int], errors: dict[str, str] | None,
               keys: dict[str, list[str]] | None = None) -> None:
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(f"UPDATE {TABLE} SET finished_at = now(), status = %s, counts = %s::jsonb, total = %s, "
                        "errors = %s::jsonb, keys = %s::jsonb WHERE id = %s",
                        ("failed" if errors else "done", orjson.dumps(counts).decode(), sum(counts.values()),
                         orjson.dumps(errors).decode() if errors else None,
                         orjson.dumps(keys).decode() if keys else None, audit_id))

    def erased_keys(self, email_sha256: str) -> dict[str, set[str]]:
        """The keys earlier erasures of this address deleted, per collection."""
        out: dict[str, set[str]] = {}
        for row in self.rows(email_sha256):
            if not row["dry_run"] and isinstance(row["keys"], dict):
                for collection, keys in row["keys"].items():
                    out.setdefault(collection, set()).update(map(str, keys))
        return out

    def rows(self, email_sha256: str | None = None) -> list[dict[str, Any]]:
        """The audit rows, newest first (all of them, or one address's by its hash)."""
        with self.conns.transaction(self.dsn) as cur:
            cur.execute(_SCHEMA)
            where = " WHERE email_sha256 = %s" if email_sha256 else ""
            cur.execute(f"SELECT id, started_at, finished_at, requested_by, email_sha256, dry_run, status, counts, "
                        f"total, errors, keys FROM {TABLE}{where} ORDER BY id DESC",
                        (email_sha256,) if email_sha256 else ())
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
