"""One batch through the chain in one task: journal, validate, derive, then fan out.

Derive runs in the validate task: one broker hop fewer (an encode, two decodes and a
pickle of the whole batch). ``sophia.derive`` stays for dead letters replayed at the
derive stage.
"""
from __future__ import annotations

import logging
from typing import Any

from sophia_tasks.core.documents import encoding_cache
from sophia_tasks.observe import trace
from sophia_tasks.pipeline import stages
from sophia_tasks.pipeline.fanout import fan_out
from sophia_tasks.pipeline.records import record_error, record_test_deliveries
from sophia_tasks.pipeline.runtime import Context
from sophia_tasks.store.journal import append_events

log = logging.getLogger(__name__)


def events_of_cut(ctx: Context, cut: dict[str, Any]) -> list[Any] | None:
    """The events of an ingest-buffer cut; None (logged) when it is gone."""
    if ctx.events is None:
        raise RuntimeError(f"an ingest batch {cut.get('$events')} reached a worker with no ingest buffer")
    events = ctx.events.load(cut)
    if events is None:
        if ctx.events.expired(cut):
            log.error("ingest batch %s (%s events) expired after %d s before it was validated; the events "
                      "are lost unless the sender redelivers them", cut.get("$events"), cut.get("n"),
                      ctx.settings.batch_ttl_seconds)
            record_error(ctx, "validate", None, "expired", int(cut.get("n") or 0))
        else:  # released by the run that validated it: this message is a redelivery
            log.info("ingest batch %s already validated; redelivery acknowledged", cut.get("$events"))
    return events


def validate_events_batch(ctx: Context, events: list[dict[str, Any]], lane: str,
                          targets: list[str] | None, task_id: str | None, journaled: bool = False,
                          cut: str | None = None) -> None:
    if not journaled:
        journal_hook(ctx, events, lane)
    result = stages.validate_events(ctx.spec, events)
    if result.letters:
        ctx.dlq.record(result.letters)
        record_error(ctx, "validate", None, "schema", len(result.letters))
    if result.tests:
        record_test_deliveries(ctx, result.tests)
    ctx.stats.record([("documents_validated", {"collection": c}, len(d)) for c, d in result.documents.items()],
                     {"validate": len(events)}, trace=trace.validated(ctx.settings, ctx.spec, result, task_id, cut))
    for collection, documents in result.documents.items():
        derive_and_fan_out(ctx, collection, documents, lane, targets, task_id)


def journal_hook(ctx: Context, events: list[dict[str, Any]], lane: str) -> None:
    """Every accepted event is journaled before it moves on (rebuilds replay the journal)."""
    append_events(ctx.settings.postgres_dsn, events, lane, ctx.sealer)


def derive_and_fan_out(ctx: Context, collection: str, documents: list[dict[str, Any]], lane: str,
                       targets: list[str] | None, batch_id: str | None = None) -> None:
    """Run the derivations of ``collection``; queue each derived batch for its queued targets, then
    write its inline targets here (``SOPHIA_INLINE_TARGETS``)."""
    result = stages.derive_documents(ctx.spec, collection, documents)
    traced = trace.derived(ctx.settings, result)  # stamped now: the inline writes below come after
    if result.letters:
        ctx.dlq.record(result.letters)
        record_error(ctx, "derive", None, "transform", len(result.letters))
    with encoding_cache():  # the derived documents are final: each is encoded once for every target
        fan_out(ctx, result.documents, lane, targets, batch_id)
    ctx.stats.record([("documents_derived", {"collection": c}, len(d)) for c, d in result.documents.items()],
                     {"derive": len(documents)}, trace=traced)
