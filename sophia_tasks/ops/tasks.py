"""Operators' tasks: backfill, dead-letter replay, and the retention purges beat runs."""
from __future__ import annotations

import logging
from typing import Any

import psycopg2
import redis as _redis
from celery import shared_task
from kombu.exceptions import OperationalError as _BrokerError  # a broker blip: the backfill task retries

from sophia_tasks.materializers import get_materializer
from sophia_tasks.messaging.config import settings_of, spec_of
from sophia_tasks.ops.backfill import DEFAULT_BATCH, BackfillError, run_file_backfill, run_gong_backfill
from sophia_tasks.ops.reconcile import run_reconcile
from sophia_tasks.ops.replay import replay_letters
from sophia_tasks.pipeline.failures import StageTask
from sophia_tasks.pipeline.runtime import context
from sophia_tasks.store.journal import purge_expired

log = logging.getLogger(__name__)


@shared_task(name="sophia.replay", base=StageTask)
def replay(letter_ids: list[int]) -> int:
    """Put dead letters back into the chain at the stage where each one failed."""
    return replay_letters(context(), letter_ids)


@shared_task(name="sophia.purge_retention", base=StageTask)
def purge_retention() -> dict[str, int]:
    """Delete staging rows older than each binding's retention_days (Postgres keeps 30 days), the tombstones of
    deletes older than the journal's retention, and dead letters older than SOPHIA_DEAD_LETTER_RETENTION_DAYS
    (30), replayed or not: they hold PII."""
    ctx = context()
    purged: dict[str, int] = {}
    for mat in ctx.spec.materializations.values():
        if mat.endpoint != "postgres":
            continue
        writer = get_materializer("postgres", ctx.settings, ctx.spec)
        for binding in mat.bindings:
            if binding.retention_days:
                purged[str(binding.table)] = writer.purge_older_than(binding, binding.retention_days)  # type: ignore[attr-defined]
    # Tombstones of hard deletes guard against late, older upserts; none can come after the journal's window.
    keep = ctx.spec.journal_retention_days
    for mat in ctx.spec.materializations.values():
        writer = get_materializer(mat.endpoint, ctx.settings, ctx.spec)
        purge_tombstones = getattr(writer, "purge_tombstones", None)
        for binding in mat.bindings:
            if purge_tombstones is not None and not binding.soft_delete:
                try:
                    purged[f"tombstones:{mat.name}:{binding.table}"] = purge_tombstones(binding, keep)
                except Exception as exc:  # a target that is down must not stop the other purges
                    log.warning("could not purge the tombstones of %s: %r", binding.table, exc)
    days = ctx.settings.dead_letter_retention_days
    purged["sophia_dead_letters"] = ctx.dlq.purge(status="all", older_than_seconds=days * 86400.0)
    log.info("retention purge: %s", purged)
    return purged


@shared_task(name="sophia.backfill", bind=True, acks_late=True, reject_on_worker_lost=True,
          autoretry_for=(psycopg2.OperationalError, _BrokerError, _redis.ConnectionError),
          max_retries=5, retry_backoff=5, retry_backoff_max=120, retry_jitter=True)
def backfill_task(self: Any, path: str | None = None, gong: bool = False, since: str | None = None,
                  until: str | None = None, restart: bool = False, strict: bool = False,
                  batch_size: int = DEFAULT_BATCH, max_retries: int = 5,
                  collection: str | None = None) -> dict[str, Any]:
    """``celery -A sophia_tasks call sophia.backfill --kwargs '{"path": "CALLS.ndjson"}'``: the CLI's code in a worker.

    A redelivered task (worker killed) resumes from the checkpoint. A backfill that
    cannot go on (missing file, a Gong page that never comes) is logged and answered,
    never retried blindly.
    """
    settings = settings_of(self.app)

    def log_progress(done: int, total: int, published: int) -> None:
        pct = f"{100.0 * done / total:.0f}%" if total else "?"
        log.info("backfill %s: %d event(s) published by this run, %s", path or "gong", published, pct)

    try:
        if gong:
            summary = run_gong_backfill(settings, since or "", until, restart=restart, batch_size=batch_size,
                                        progress=log_progress, max_retries=max_retries, collection=collection)
        elif path:
            summary = run_file_backfill(settings, path, restart=restart, strict=strict, batch_size=batch_size,
                                        progress=log_progress, collection=collection)
        else:
            raise BackfillError('sophia.backfill needs kwargs {"path": ...} or {"gong": true, "since": ...}')
    except BackfillError as exc:
        log.error("backfill failed: %s", exc)
        return {"status": "failed", "error": str(exc)}
    if summary.bad_examples:
        log.warning("backfill %s: bad items (first %d): %s", summary.source, len(summary.bad_examples),
                    "; ".join(summary.bad_examples))
    return summary.to_dict()


@shared_task(name="sophia.purge_journal", acks_late=True)
def purge_journal_task() -> list[str]:
    """Beat: drop journal partitions older than the flow spec's ``journal.retention_days``."""
    return purge_expired(settings_of().postgres_dsn, spec_of().journal_retention_days)


@shared_task(name="sophia.reconcile", bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(psycopg2.OperationalError, _BrokerError, _redis.ConnectionError),
             max_retries=3, retry_backoff=10, retry_backoff_max=120, retry_jitter=True)
def reconcile_task(self: Any, since: str | None = None, until: str | None = None,
                   dry_run: bool = False) -> dict[str, Any]:
    """Beat, every SOPHIA_RECONCILE_EVERY with Gong API credentials: enqueue the calls Gong has and we
    do not (or older). Redelivered or rerun, it resumes from its checkpoint; repairs are idempotent."""
    try:
        report = run_reconcile(settings_of(self.app), since, until, dry_run=dry_run)
    except BackfillError as exc:  # no credentials, another run holds the lock: say so, do not retry
        log.warning("reconcile skipped: %s", exc)
        return {"status": "skipped", "error": str(exc)}
    summary = report.as_dict()
    summary["calls"] = summary["calls"][:50]
    return summary
