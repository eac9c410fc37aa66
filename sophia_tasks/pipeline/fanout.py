"""Where derived documents go, and what happens when a write fails.

A target is written inline by the task (``SOPHIA_INLINE_TARGETS``), gathered in its
target buffer (``SOPHIA_COALESCE_TARGETS``), or queued under a claim check. A failed
document is sent again with backoff, or dead-lettered when no retry can help.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from sophia_tasks.core.documents import meta
from sophia_tasks.ingest.buffer import coalesces
from sophia_tasks.materializers import BindingPaused, TransientTargetError, WriteResult, write_deadline
from sophia_tasks.observe import paused as paused_bindings
from sophia_tasks.observe import trace
from sophia_tasks.pipeline import stages
from sophia_tasks.pipeline.claim_checks import is_ref
from sophia_tasks.pipeline.records import record_error, record_written
from sophia_tasks.pipeline.runtime import Context, buffer_of, bulkhead, claim_store, send_materialize
from sophia_tasks.store.deadletter import Letter

log = logging.getLogger(__name__)

#: Seconds a paused batch waits before it looks at its table again, at first...
PAUSE_RECHECK_MIN = 3.0
#: ...and at most, once the pause has lasted a while (a tenth of its age so far): a long pause
#: must not churn the broker, and `flows apply` is followed by writes within a minute.
PAUSE_RECHECK_MAX = 60.0
#: Seconds between two error lines about the same paused binding from one process.
PAUSE_LOG_EVERY = 60.0
#: Per process: (target, collection) -> when this process first found it paused, and last said so.
_paused_since: dict[tuple[str, str], float] = {}
_pause_logged: dict[tuple[str, str], float] = {}
#: Per process: (target, collection) -> when a write last removed its paused entry (at most every 10 s).
_resume_cleared: dict[tuple[str, str], float] = {}


def fan_out(ctx: Context, derived: dict[str, list[dict[str, Any]]], lane: str,
            targets: list[str] | None, batch_id: str | None) -> None:
    for name, docs in derived.items():
        if not docs:
            continue
        names = [m.name for m in ctx.spec.materializations_of(name) if targets is None or m.name in targets]
        if not names:
            continue
        inline = [t for t in names if inline_now(ctx, t)]
        queued = [t for t in names if t not in inline]
        gathered = []
        for target in (t for t in queued if coalesces(ctx.settings, t)):
            try:
                buffer_of(ctx, target, name, lane).append(docs)
                gathered.append(target)
            except Exception as exc:  # the broker's Redis refused: queue this batch on its own instead
                log.warning("%s: could not add %d document(s) to its buffer, queueing them: %s", target,
                            len(docs), exc)
        queued = [t for t in queued if t not in gathered]
        if queued:  # first, so a slow target's write starts in another process while this one writes
            batch = claim_check(ctx, docs, queued, f"{batch_id}:{name}" if batch_id else None)
            for target in queued:
                send_materialize(target, name, batch, lane=lane)
        for target in inline:
            write_inline(ctx, target, name, docs, lane, batch_id)


#: Per process: target -> monotonic time until which its writes go through its queue instead.
_inline_off: dict[str, float] = {}
#: Seconds an inline write may wait on its target (lock, statement) before giving up.
INLINE_DEADLINE = 2.0
#: An inline write that failed, or took longer than this, sends the target's batches to its queue...
INLINE_SLOW = 2.0
#: ...for this many seconds.
INLINE_BACKOFF = 30.0


def inline_now(ctx: Context, target: str) -> bool:
    return target in ctx.settings.inline_targets and _inline_off.get(target, 0.0) <= time.monotonic()


def write_inline(ctx: Context, target: str, collection: str, documents: list[dict[str, Any]], lane: str,
                 task_id: str | None) -> None:
    """Write one target from the validate task: no claim check, no second decode, no queue wait.

    Its failures take the queued path (``write_and_settle`` re-sends them with backoff or
    dead-letters them), and a failed or slow write turns inline writing of that target off in
    this process for ``INLINE_BACKOFF`` seconds, so a sick target costs the others one
    batch's wait, not one per batch.
    """
    started = time.monotonic()
    try:
        with write_deadline(INLINE_DEADLINE):
            result = write_and_settle(ctx, None, None, target, collection, documents, 1, lane,
                                      f"{task_id}:{target}" if task_id else None)
    except Exception as exc:  # not a target error (those are settled above): let the queued path retry it
        log.warning("%s: inline write of %d document(s) failed, queueing them: %r", target, len(documents), exc)
        _inline_off[target] = time.monotonic() + INLINE_BACKOFF
        send_materialize(target, collection, claim_check(ctx, documents, [target], f"{task_id}:{target}:inline"
                                                   if task_id else None), lane=lane)
        return
    took = time.monotonic() - started
    if result.rejected or took > INLINE_SLOW:
        _inline_off[target] = time.monotonic() + INLINE_BACKOFF
        log.warning("%s: inline write %s (%.1f s); its batches go through its queue for %.0f s", target,
                    f"had {len(result.rejected)} failure(s)" if result.rejected else "was slow", took, INLINE_BACKOFF)


def claim_check(ctx: Context, documents: list[dict[str, Any]], targets: list[str], name: str | None = None) -> Any:
    """What a materialize message carries: a claim check on a Redis broker, else the documents."""
    if ctx.claims is None:
        return documents
    try:
        return ctx.claims.put(documents, targets, name)
    except Exception as exc:  # the broker's Redis refused the blob: send inline, lose nothing
        log.warning("could not store a batch of %d document(s), sending it inline: %s", len(documents), exc)
        return documents


def documents_of(ctx: Context, batch: Any) -> list[dict[str, Any]] | None:
    """The documents a materialize message stands for (None: its claim check is gone)."""
    if not is_ref(batch):
        return batch
    return claim_store(ctx, f"a claim-checked batch {batch.get('$batch')}").get(batch)


def write_and_settle(ctx: Context, node: str | None, slot: str | None, target: str, collection: str,
                     documents: list[dict[str, Any]], attempt: int, lane: str,
                     task_id: str | None = None) -> WriteResult:
    """Write; then each failed document is re-sent (new claim) or dead-lettered. ``slot``: the
    bulkhead slot to give back (None for an inline write, which holds none)."""
    paused: BindingPaused | None = None
    try:
        try:
            result = stages.materialize_documents(ctx.settings, ctx.spec, target, collection, documents)
            error_reason = "data"
        except TransientTargetError as exc:
            result = WriteResult(failed=[(d, str(exc)[:2000]) for d in documents])
            error_reason = "unreachable"
        except BindingPaused as exc:
            paused = exc
    finally:
        if slot is not None and node is not None:
            bulkhead(ctx).release(node, target, slot)
    if paused is not None:
        hold_paused(ctx, target, collection, documents, attempt, lane, task_id, paused)
        return WriteResult(failed=[(d, str(paused)[:2000]) for d in documents])
    resumed(ctx, target, collection)
    if len(result.rejected) < len(documents):
        record_written(ctx, target, collection, documents, result, lane, attempt)
    if not result.rejected:
        return result
    keyless, retryable = result.keyless, result.failed
    retrying = bool(retryable) and attempt < ctx.settings.retry_max
    record_error(ctx, "materialize", target, error_reason, len(retryable),
                 trace.failed(ctx.settings, target, [d for d, _ in retryable], [d for d, _ in keyless], attempt,
                              error_reason, retrying))
    letters = [Letter(stage="materialize", target=target, collection=collection, payload=d, error=e,
                      event_id=meta(d).get("event_id"), attempts=attempt) for d, e in keyless]
    if retrying:
        countdown = stages.backoff_seconds(ctx.settings, attempt)
        log.warning("%s: %d document(s) of %s failed (attempt %d of %d), retrying in %.1fs: %s", target,
                    len(retryable), collection, attempt, ctx.settings.retry_max, countdown, retryable[0][1][:300])
        again = [d for d, _ in retryable]
        send_materialize(target, collection, claim_check(ctx, again, [target], f"{task_id}:retry" if task_id else None),
                         attempt=attempt + 1,
                         countdown=countdown, lane=lane)
    else:
        letters += [Letter(stage="materialize", target=target, collection=collection, payload=d, error=e,
                           event_id=meta(d).get("event_id"), attempts=attempt,
                           document_key=ctx.spec.collection(collection).key_of(d)) for d, e in retryable]
        if retryable:
            log.error("%s: %d document(s) of %s dead-lettered after %d attempts: %s", target, len(retryable),
                      collection, attempt, retryable[0][1][:300])
    if letters:
        ctx.dlq.record(letters)
    return result


def pause_countdown(paused_for: float) -> float:
    """How long a paused batch waits before it looks again: 3 s at first, a tenth of the pause so far
    after that, at most a minute."""
    return round(min(PAUSE_RECHECK_MAX, max(PAUSE_RECHECK_MIN, paused_for / 10.0)), 3)


def hold_paused(ctx: Context, target: str, collection: str, documents: list[dict[str, Any]], attempt: int,
                lane: str, task_id: str | None, exc: BindingPaused) -> None:
    """Keep a batch whose table does not match the spec: re-sent to the target's queue with the same
    attempt (a pause never burns the retry budget into dead letters) under a fresh claim check, so
    no pause, however long, outlasts the claim check's or the target buffer's expiry."""
    key = (target, collection)
    now = time.time()
    since = _paused_since.setdefault(key, now)
    record_error(ctx, "materialize", target, "paused", len(documents))
    try:  # since when any process has seen it paused (a pause that ended long ago starts anew)
        since = paused_bindings.mark(ctx.stats.client, target, collection, str(exc), len(documents), now)
    except Exception as err:  # the counters' Redis: the documents are kept all the same
        log.warning("%s: could not record the paused binding of %s: %s", target, collection, err)
    countdown = pause_countdown(now - since)
    if ctx.settings.batch_ttl_seconds > 0:  # the fresh claim check must outlive the wait
        countdown = min(countdown, ctx.settings.batch_ttl_seconds / 2)
    if now - _pause_logged.get(key, 0.0) >= PAUSE_LOG_EVERY:
        _pause_logged[key] = now
        log.error("%s: binding of %s PAUSED, its documents are kept and looked at again every %.0f-%.0f s "
                  "(not dead-lettered, no retry attempt used): %s", target, collection, PAUSE_RECHECK_MIN,
                  PAUSE_RECHECK_MAX, exc)
    name = f"{task_id}:paused" if task_id else None
    send_materialize(target, collection, claim_check(ctx, documents, [target], name), attempt=attempt,
                     countdown=countdown, lane=lane)


def resumed(ctx: Context, target: str, collection: str) -> None:
    """A write went through: a pause this process saw is over; the shared entry is removed too
    (at most every 10 s per binding and process, one HDEL), whichever process had reported it."""
    key = (target, collection)
    was = _paused_since.pop(key, None)
    if was is not None:
        _pause_logged.pop(key, None)
        log.warning("%s: binding of %s resumed after %.0f s paused", target, collection, time.time() - was)
    now = time.monotonic()
    if was is None and now - _resume_cleared.get(key, -1e9) < 10.0:
        return
    _resume_cleared[key] = now
    try:
        paused_bindings.clear(ctx.stats.client, target, collection)
    except Exception as err:  # it goes stale by itself
        log.debug("could not clear the paused entry of %s/%s: %s", target, collection, err)
