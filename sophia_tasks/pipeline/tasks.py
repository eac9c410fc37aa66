"""The pipeline's Celery tasks: bodies only.

Every task is acks_late and reject_on_worker_lost (app config), takes a list, and
is idempotent: a redelivered batch rewrites the same versions and changes nothing.
The chain is an explicit publish of the next stage before the task returns, never a
chord, so the next stage is on the broker before this message is acked. What a task
does with its batch lives beside it: ``batches`` (validate, derive), ``fanout``
(targets, retries, dead letters), ``failures`` (the task base), ``runtime`` (clients).
"""
from __future__ import annotations

import contextlib
import logging
import random
from typing import Any

from celery import Task, shared_task

from sophia_tasks.core.documents import encoding_cache
from sophia_tasks.ingest.buffer import is_ref as is_events_ref
from sophia_tasks.logs import log_context
from sophia_tasks.messaging import routing
from sophia_tasks.pipeline.batches import derive_and_fan_out, events_of_cut, journal_hook, validate_events_batch
from sophia_tasks.pipeline.claim_checks import is_ref
from sophia_tasks.pipeline.failures import StageTask
from sophia_tasks.pipeline.fanout import documents_of, write_and_settle
from sophia_tasks.pipeline.records import record_error
from sophia_tasks.pipeline.runtime import (
    Context,
    buffer_of,
    bulk_window,
    bulkhead,
    context,
    send_materialize,
    send_validate,
    validate_slots,
)

log = logging.getLogger(__name__)

#: The bulkhead name that caps live validate tasks per node (``SOPHIA_VALIDATE_CONCURRENCY``).
VALIDATE_SLOT = "stage:validate"
#: Seconds a live validate task waits for a slot before it goes back on the queue.
VALIDATE_WAIT = 10.0


def batch_size(batch: Any) -> int | None:
    """How many events or documents a message stands for: a list, or a claim check's or cut's ``n``."""
    if isinstance(batch, list):
        return len(batch)
    return batch.get("n") if isinstance(batch, dict) else None


@shared_task(name=routing.INGEST, base=StageTask)
def ingest(events: list[dict[str, Any]]) -> None:
    """Fallback for ingest messages consumed one at a time (the batcher normally takes them)."""
    send_validate(events)


@shared_task(name=routing.VALIDATE, base=StageTask)
def validate(events: Any, lane: str = "live", targets: list[str] | None = None, slot: str | None = None) -> None:
    """``events`` is the list itself, or the key of a batch cut from the ingest buffer."""
    ctx = context()
    node = validate.request.hostname or "local"
    cpu_slot = None
    if lane == "live":
        cpu_slot = validate_slots(ctx).acquire(node, VALIDATE_SLOT, wait=VALIDATE_WAIT)
        if cpu_slot is None:  # the node's cores stayed busy: back on the queue, without the wait
            send_validate(events, lane, targets)
            return
    try:
        with log_context(stage="validate", events=batch_size(events), task_id=validate.request.id):
            _validate(ctx, events, lane, targets)
    finally:
        if cpu_slot is not None:
            validate_slots(ctx).release(node, VALIDATE_SLOT, cpu_slot)
        if slot:  # done, or failed (a rare retry is not paced): the publisher may send the next batch
            bulk_window(ctx).release(slot)


def _validate(ctx: Context, events: Any, lane: str, targets: list[str] | None) -> None:
    cut = events if is_events_ref(events) else None
    if cut is not None:
        with encoding_cache():  # the journal stores each event as the text it was loaded from
            events = events_of_cut(ctx, cut)
            if events is None:
                return
            journal_hook(ctx, events, lane)
    validate_events_batch(ctx, events, lane, targets, validate.request.id, journaled=cut is not None,
                          cut=cut["$events"] if cut is not None else None)
    if cut is not None:
        ctx.events.release(cut)  # type: ignore[union-attr]


@shared_task(name=routing.DERIVE, base=StageTask)
def derive(collection: str, documents: list[dict[str, Any]], lane: str = "live",
           targets: list[str] | None = None) -> None:
    with log_context(stage="derive", collection=collection, events=len(documents), task_id=derive.request.id):
        derive_and_fan_out(context(), collection, documents, lane, targets, derive.request.id)


@shared_task(name=routing.MATERIALIZE, bind=True, base=StageTask, soft_time_limit=240, time_limit=300)
def materialize(self: Task, target: str, collection: str, documents: Any, attempt: int = 1,
                lane: str = "live") -> None:
    """Write one batch to one target; retried alone, so other targets never wait for it.

    ``documents`` is the list itself, a claim check (``sophia_tasks.pipeline.claim_checks``) or a coalesced cut of
    a target buffer (``sophia_tasks.ingest.buffer``); either is released only once this target's
    share is settled, so a crash before that redelivers a message whose batch is still there.
    """
    with log_context(stage="materialize", target=target, collection=collection, events=batch_size(documents),
                     task_id=self.request.id):
        _materialize(self, target, collection, documents, attempt, lane)


def _materialize(self: Task, target: str, collection: str, documents: Any, attempt: int, lane: str) -> None:
    ctx = context()
    batch = documents
    gathered = buffer_of(ctx, target, collection, lane) if is_events_ref(batch) else None
    # A coalesced cut's items are the documents' text: inside the cache the write reuses it.
    with encoding_cache() if gathered is not None else contextlib.nullcontext():
        loaded = gathered.load(batch) if gathered is not None else documents_of(ctx, batch)
        if loaded is None:
            key = batch.get("$events") if gathered is not None else batch.get("$batch")
            expired = gathered.expired(batch) if gathered is not None else \
                ctx.claims is not None and ctx.claims.expired(batch)
            if expired:
                log.error("%s: batch %s of %s (%s documents) expired after %d s before it was written; restore "
                          "the target with `sophia-tasks rebuild --target %s`", target, key, collection,
                          batch.get("n"), ctx.settings.batch_ttl_seconds, target)
                record_error(ctx, "materialize", target, "expired", int(batch.get("n") or 0))
            else:  # deleted once settled: this message is a redelivery of settled work
                log.info("%s: batch %s of %s already %s; redelivery acknowledged", target, key, collection,
                         "written" if gathered is not None else "settled for every target")
            return
        node = self.request.hostname or "local"
        # A coalesced cut steps aside at once when the target's slots are busy: waiting would hold a pool
        # process that validate needs, and its step aside re-publishes a key, not the documents.
        wait = 0.0 if gathered is not None else ctx.settings.bulkhead_wait_seconds
        slot = bulkhead(ctx).acquire(node, target, wait=wait)
        if slot is None:
            # This target already has its share of the pool busy (likely slow): step aside.
            send_materialize(target, collection, batch, attempt=attempt, lane=lane,
                             countdown=0.2 + random.random() * 0.3)
            return
        write_and_settle(ctx, node, slot, target, collection, loaded, attempt, lane, self.request.id)
    if gathered is not None:
        gathered.release(batch)
    elif is_ref(batch):
        ctx.claims.release(batch, target)  # type: ignore[union-attr]
