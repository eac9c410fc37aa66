"""Celery tasks: thin wrappers that move batches between the stages in ``pipeline``.

Every task is acks_late and reject_on_worker_lost (app config), takes a list, and
is idempotent: a redelivered batch rewrites the same versions and changes nothing.
The chain is explicit ``apply_async`` of the next stage before the task returns,
never a chord, so the next stage is on the broker before this message is acked.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import time
from typing import Any, Callable, TypeVar

from celery import Task
from celery.signals import celeryd_after_setup, worker_init
from celery.exceptions import Retry

from sophia_tasks import pipeline
from sophia_tasks.bulkhead import Bulkhead, clear_node
from sophia_tasks.claims import is_ref
from sophia_tasks.ingest_buffer import IngestBuffer, coalesces, target_buffer
from sophia_tasks.ingest_buffer import is_ref as is_events_ref
from sophia_tasks.celery_app import app, materialize_message, stage_queue
from sophia_tasks.deadletter import Letter
from sophia_tasks.documents import encoding_cache, meta
from sophia_tasks.gcpause import cycle_collector_paused
from sophia_tasks.materializers import TransientTargetError

log = logging.getLogger(__name__)
T = TypeVar("T")

_context: dict[int, pipeline.Context] = {}
#: Objects this process keeps (bulkheads, the bulk window, target buffers), dropped after a fork.
_kept: dict[Any, Any] = {}
_kept_pid = 0


def kept(key: Any, make: Callable[[], T]) -> T:
    """The object ``make()`` built for ``key`` in this process (Celery's children are forked)."""
    global _kept_pid
    if _kept_pid != os.getpid():
        _kept.clear()
        _kept_pid = os.getpid()
    value = _kept.get(key)
    if value is None:
        value = _kept[key] = make()
    return value


def context() -> pipeline.Context:
    """One per process: settings and spec from the app, clients opened after the fork."""
    ctx = _context.get(os.getpid())
    if ctx is None:
        ctx = pipeline.build_context(app.conf.sophia_settings, app.conf.sophia_spec)
        _context.clear()
        _context[os.getpid()] = ctx
    return ctx


def bulkhead(ctx: pipeline.Context) -> Bulkhead:
    return kept("bulkhead", lambda: Bulkhead(ctx.stats.client, ctx.settings.target_concurrency))


@celeryd_after_setup.connect
def _clear_stale_slots(sender: str, instance: Any = None, **kwargs: Any) -> None:
    """Slots held by a worker that was killed under this node name would otherwise block it for minutes."""
    import redis as redis_lib

    settings = app.conf.sophia_settings
    client = redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        n = clear_node(client, sender)
        if n:
            log.info("cleared %d stale bulkhead slot set(s) of %s", n, sender)
    finally:
        client.close()


#: Allocations between young-generation collections (CPython's default is 700).
GC_THRESHOLD = (50_000, 20, 20)


@worker_init.connect
def _prepare_pool(**kwargs: Any) -> None:
    """Before the pool forks: fewer cycle collections, and the Snowflake connector imported.

    Why the collector: decoding a batch of 500 calls builds ~150,000 dicts and lists, which at
    the default threshold triggers hundreds of collections that rescan the heap (measured:
    orjson decodes our batches at 114 MB/s by default, 215 MB/s with this threshold; the
    pipeline's documents are trees, reference counting frees them; the tasks themselves pause the
    collector per batch, ``StageTask.__call__``, so this governs the rest). ``gc.freeze()`` moves what
    start-up built out of every future scan, and keeps those pages shared after the fork.
    Why the connector: otherwise every pool child pays ~2 s of imports on its first Snowflake
    batch, and again after each memory recycle. The derivations build their compiled configs here
    for the same reason (``pipeline.warm_derivations``).
    """
    pipeline.warm_derivations(app.conf.sophia_spec)
    if any(m.endpoint == "snowflake" for m in app.conf.sophia_spec.materializations.values()):
        try:
            import snowflake.connector  # noqa: F401
            import snowflake.connector.errors  # noqa: F401
        except ImportError as exc:  # the materializer reports it on first use, with its context
            log.warning("snowflake connector not importable: %s", exc)
    gc.set_threshold(*GC_THRESHOLD)
    gc.freeze()


class StageTask(Task):
    """Unexpected failures (broker, dead-letter store, a bug) retry with backoff; when the budget
    is spent, the batch's documents go to the dead-letter store rather than being dropped."""

    autoretry_for = (Exception,)
    dont_autoretry_for = (Retry,)
    max_retries = 10
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True
    acks_late = True
    reject_on_worker_lost = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Every stage works on a batch: the cycle collector waits until the batch is done
        (``sophia_tasks.gcpause``: about a fifth of the validate path's CPU otherwise)."""
        with cycle_collector_paused():
            return super().__call__(*args, **kwargs)

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        cut = args[0] if self.name == "sophia.validate" and args and is_events_ref(args[0]) else None
        if cut is not None:  # an ingest-buffer cut: dead-letter its events, then let it go
            events = self._reload(task_id, exc, "ingest batch", cut["$events"],
                                  lambda: context().events.load(cut))  # type: ignore[union-attr]
            if events is None:
                return
            args = (events, *args[1:])
        batch = args[2] if self.name == "sophia.materialize" and len(args) >= 3 else None
        gathered = None
        if is_events_ref(batch) or is_ref(batch):  # a coalesced cut or a claim check: dead-letter its documents
            if is_events_ref(batch):
                gathered = buffer_of(context(), str(args[0]), str(args[1]), kwargs.get("lane", "live"))
                docs = self._reload(task_id, exc, "batch", batch["$events"], lambda: gathered.load(batch))
            else:
                docs = self._reload(task_id, exc, "batch", batch["$batch"], lambda: documents_of(context(), batch))
            if docs is None:
                return
            args = (args[0], args[1], docs, *args[3:])
        letters = letters_for_failed_task(self.name, args, kwargs, exc)
        if not letters:
            log.error("%s[%s] failed for good: %r", self.name, task_id, exc)
            return
        try:
            ctx = context()
            ctx.dlq.record(letters)
            pipeline.record_error(ctx, letters[0].stage, letters[0].target, "exception", len(letters))
            log.error("%s[%s] failed for good, %d document(s) dead-lettered: %r", self.name, task_id,
                      len(letters), exc)
        except Exception as store_exc:  # both the task and the store failed: say so loudly, with the payload
            log.critical("%s[%s] failed (%r) and the dead-letter store is unavailable (%r); payload: %s",
                         self.name, task_id, exc, store_exc, str(args)[:20000])
            return
        if is_ref(batch) and ctx.claims is not None:
            ctx.claims.release(batch, str(args[0]))
        if cut is not None and ctx.events is not None:
            ctx.events.release(cut)
        if gathered is not None:
            gathered.release(batch)

    def _reload(self, task_id: str, exc: BaseException, what: str, key: Any, load: Callable[[], Any]) -> Any:
        """What a failed task's batch stood for, to dead-letter it; None (logged) when it cannot be had."""
        try:
            value = load()
        except Exception as load_exc:
            log.critical("%s[%s] failed (%r) and its %s %s could not be read (%r)", self.name, task_id, exc, what,
                         key, load_exc)
            return None
        if value is None:
            log.error("%s[%s] failed (%r); its %s %s is already gone", self.name, task_id, exc, what, key)
        return value


def letters_for_failed_task(name: str, args: tuple, kwargs: dict, exc: BaseException) -> list[Letter]:
    """The documents a failed stage task was carrying, as letters that replay at that stage."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    attempts = StageTask.max_retries + 1
    if name in ("sophia.validate", "sophia.ingest") and args:
        return [Letter(stage="validate", collection=str(e.get("collection") if isinstance(e, dict) else "?"),
                       payload=e if isinstance(e, dict) else {"value": e}, error=error, attempts=attempts,
                       event_id=e.get("event_id") if isinstance(e, dict) else None) for e in args[0]]
    if name == "sophia.derive" and len(args) >= 2:
        return [Letter(stage="derive", collection=args[0], payload=d, error=error, attempts=attempts,
                       event_id=meta(d).get("event_id")) for d in args[1]]
    if name == "sophia.materialize" and len(args) >= 3:
        return [Letter(stage="materialize", target=args[0], collection=args[1], payload=d, error=error,
                       attempts=attempts, event_id=meta(d).get("event_id")) for d in args[2]]
    return []


def _lane_kwargs(lane: str, targets: list[str] | None) -> dict[str, Any]:
    """Only non-default routing travels in the message, so live messages stay as small as before."""
    kwargs: dict[str, Any] = {}
    if lane != "live":
        kwargs["lane"] = lane
    if targets is not None:
        kwargs["targets"] = list(targets)
    return kwargs


def send_validate(events: list[dict[str, Any]], lane: str = "live", targets: list[str] | None = None,
                  slot: str | None = None) -> None:
    """Hand events to the chain. ``lane="bulk"`` (backfill, rebuild) uses the lower-priority queues;
    ``targets`` limits materialization to those targets (a rebuild of one target); ``slot`` is the
    bulk window slot the batch holds until it is validated (``sophia_tasks.bulk_window``)."""
    settings = context().settings
    kwargs = _lane_kwargs(lane, targets)
    if slot:
        kwargs["slot"] = slot
    validate.apply_async(args=[events], kwargs=kwargs, queue=stage_queue(settings, "validate", lane))


def send_derive(collection: str, documents: list[dict[str, Any]], lane: str = "live",
                targets: list[str] | None = None) -> None:
    settings = context().settings
    kwargs = _lane_kwargs(lane, targets)
    derive.apply_async(args=[collection, documents], kwargs=kwargs, queue=stage_queue(settings, "derive", lane))


def send_materialize(target: str, collection: str, documents: Any, attempt: int = 1,
                     countdown: float | None = None, lane: str = "live") -> None:
    args, kwargs, queue = materialize_message(context().settings, target, collection, documents, attempt, lane)
    materialize.apply_async(args=args, kwargs=kwargs, queue=queue, countdown=countdown)


@app.task(name="sophia.ingest", base=StageTask)
def ingest(events: list[dict[str, Any]]) -> None:
    """Fallback for ingest messages consumed one at a time (the batcher normally takes them)."""
    send_validate(events)


@app.task(name="sophia.validate", base=StageTask)
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
        _validate(ctx, events, lane, targets)
    finally:
        if cpu_slot is not None:
            validate_slots(ctx).release(node, VALIDATE_SLOT, cpu_slot)
        if slot:  # done, or failed (a rare retry is not paced): the publisher may send the next batch
            bulk_window(ctx).release(slot)


#: The bulkhead name that caps live validate tasks per node (``SOPHIA_VALIDATE_CONCURRENCY``).
VALIDATE_SLOT = "stage:validate"
#: Seconds a live validate task waits for a slot before it goes back on the queue.
VALIDATE_WAIT = 10.0
#: A slot held by a process that died frees itself after this long (a batch validates in seconds).
VALIDATE_SLOT_TTL = 60.0


def validate_slots(ctx: pipeline.Context) -> Bulkhead:
    """Why a cap: validate is CPU-bound, and the pool has more processes than cores (for Snowflake
    waits and live headroom). Six validates at once on 2 cores added no throughput and starved
    every other process: the Snowflake emulator drained at 0.69x its raw rate with 6, 0.90x with
    3 pool processes (docs/benchmarks.md)."""
    return kept("validate_slots", lambda: Bulkhead(ctx.stats.client, ctx.settings.validate_concurrency,
                                                   slot_ttl=VALIDATE_SLOT_TTL))


def bulk_window(ctx: pipeline.Context) -> Any:
    from sophia_tasks.bulk_window import window_for

    return kept("bulk_window", lambda: window_for(ctx.settings, ctx.stats.client))


def _validate(ctx: pipeline.Context, events: Any, lane: str, targets: list[str] | None) -> None:
    cut = events if is_events_ref(events) else None
    if cut is not None:
        with encoding_cache():  # the journal stores each event as the text it was loaded from
            events = events_of_cut(ctx, cut)
            if events is None:
                return
            journal_hook(ctx, events, lane)
    validate_events_batch(ctx, events, lane, targets, validate.request.id, journaled=cut is not None)
    if cut is not None:
        ctx.events.release(cut)  # type: ignore[union-attr]


def events_of_cut(ctx: pipeline.Context, cut: dict[str, Any]) -> list[Any] | None:
    """The events of an ingest-buffer cut; None (logged) when it is gone."""
    if ctx.events is None:
        raise RuntimeError(f"an ingest batch {cut.get('$events')} reached a worker with no ingest buffer")
    events = ctx.events.load(cut)
    if events is None:
        if ctx.events.expired(cut):
            log.error("ingest batch %s (%s events) expired after %d s before it was validated; the events "
                      "are lost unless the sender redelivers them", cut.get("$events"), cut.get("n"),
                      ctx.settings.batch_ttl_seconds)
            pipeline.record_error(ctx, "validate", None, "expired", int(cut.get("n") or 0))
        else:  # released by the run that validated it: this message is a redelivery
            log.info("ingest batch %s already validated; redelivery acknowledged", cut.get("$events"))
    return events


def validate_events_batch(ctx: pipeline.Context, events: list[dict[str, Any]], lane: str,
                          targets: list[str] | None, task_id: str | None, journaled: bool = False) -> None:
    if not journaled:
        journal_hook(ctx, events, lane)
    result = pipeline.validate_events(ctx.spec, events)
    if result.letters:
        ctx.dlq.record(result.letters)
        pipeline.record_error(ctx, "validate", None, "schema", len(result.letters))
    if result.tests:
        record_test_deliveries(ctx, result.tests)
    ctx.stats.record([("documents_validated", {"collection": c}, len(d)) for c, d in result.documents.items()],
                     {"validate": len(events)})
    # Derive in the same task: one broker hop fewer (an encode, two decodes and a pickle of the
    # whole batch). ``sophia.derive`` stays for dead letters replayed at the derive stage.
    for collection, documents in result.documents.items():
        derive_and_fan_out(ctx, collection, documents, lane, targets, task_id)


def record_test_deliveries(ctx: pipeline.Context, documents: list[dict[str, Any]]) -> None:
    """Gong's test deliveries are acknowledged and counted, never materialized as business data."""
    ctx.stats.incr([("test_deliveries", {"collection": meta(d).get("collection")}, 1) for d in documents])
    for d in documents:
        log.info("test delivery %s for call %s acknowledged, not materialized", meta(d).get("event_id"),
                 (d.get("metaData") or {}).get("id"))


def journal_hook(ctx: pipeline.Context, events: list[dict[str, Any]], lane: str) -> None:
    """Every accepted event is journaled before it moves on (rebuilds replay the journal)."""
    try:
        from sophia_tasks.journal import append_events
    except ImportError:
        return
    append_events(ctx, events, lane)


@app.task(name="sophia.derive", base=StageTask)
def derive(collection: str, documents: list[dict[str, Any]], lane: str = "live",
           targets: list[str] | None = None) -> None:
    derive_and_fan_out(context(), collection, documents, lane, targets, derive.request.id)


def derive_and_fan_out(ctx: pipeline.Context, collection: str, documents: list[dict[str, Any]], lane: str,
                       targets: list[str] | None, batch_id: str | None = None) -> None:
    """Run the derivations of ``collection``; queue each derived batch for its queued targets, then
    write its inline targets here (``SOPHIA_INLINE_TARGETS``)."""
    result = pipeline.derive_documents(ctx.spec, collection, documents)
    if result.letters:
        ctx.dlq.record(result.letters)
        pipeline.record_error(ctx, "derive", None, "transform", len(result.letters))
    with encoding_cache():  # the derived documents are final: each is encoded once for every target
        fan_out(ctx, result.documents, lane, targets, batch_id)
    ctx.stats.record([("documents_derived", {"collection": c}, len(d)) for c, d in result.documents.items()],
                     {"derive": len(documents)})


def fan_out(ctx: pipeline.Context, derived: dict[str, list[dict[str, Any]]], lane: str,
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
            batch = claim(ctx, docs, queued, f"{batch_id}:{name}" if batch_id else None)
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


def inline_now(ctx: pipeline.Context, target: str) -> bool:
    return target in ctx.settings.inline_targets and _inline_off.get(target, 0.0) <= time.monotonic()


def write_inline(ctx: pipeline.Context, target: str, collection: str, documents: list[dict[str, Any]], lane: str,
                 task_id: str | None) -> None:
    """Write one target from the validate task: no claim check, no second decode, no queue wait.

    Its failures take the queued path (``write_and_settle`` re-sends them with backoff or
    dead-letters them), and a failed or slow write turns inline writing of that target off in
    this process for ``INLINE_BACKOFF`` seconds, so a sick target costs the others one
    batch's wait, not one per batch.
    """
    from sophia_tasks.materializers import write_deadline

    started = time.monotonic()
    try:
        with write_deadline(INLINE_DEADLINE):
            result = write_and_settle(ctx, None, None, target, collection, documents, 1, lane,
                                      f"{task_id}:{target}" if task_id else None)
    except Exception as exc:  # not a target error (those are settled above): let the queued path retry it
        log.warning("%s: inline write of %d document(s) failed, queueing them: %r", target, len(documents), exc)
        _inline_off[target] = time.monotonic() + INLINE_BACKOFF
        send_materialize(target, collection, claim(ctx, documents, [target], f"{task_id}:{target}:inline"
                                                   if task_id else None), lane=lane)
        return
    took = time.monotonic() - started
    if result.failed or took > INLINE_SLOW:
        _inline_off[target] = time.monotonic() + INLINE_BACKOFF
        log.warning("%s: inline write %s (%.1f s); its batches go through its queue for %.0f s", target,
                    f"had {len(result.failed)} failure(s)" if result.failed else "was slow", took, INLINE_BACKOFF)


def claim(ctx: pipeline.Context, documents: list[dict[str, Any]], targets: list[str], name: str | None = None) -> Any:
    """What a materialize message carries: a claim check on a Redis broker, else the documents."""
    if ctx.claims is None:
        return documents
    try:
        return ctx.claims.put(documents, targets, name)
    except Exception as exc:  # the broker's Redis refused the blob: send inline, lose nothing
        log.warning("could not store a batch of %d document(s), sending it inline: %s", len(documents), exc)
        return documents


def buffer_of(ctx: pipeline.Context, target: str, collection: str, lane: str) -> IngestBuffer:
    """The target buffer of ``target`` for ``collection``, on the broker's Redis (the claim store's client)."""
    def make() -> IngestBuffer:
        if ctx.claims is None:
            from sophia_tasks.claims import store_for

            ctx.claims = store_for(ctx.settings)
            if ctx.claims is None:
                raise RuntimeError(f"{target}: a coalesced batch needs a Redis broker")
        return target_buffer(ctx.settings, ctx.claims.client, target, collection, lane)

    return kept(("buffer", target, collection, lane), make)


def documents_of(ctx: pipeline.Context, batch: Any) -> list[dict[str, Any]] | None:
    """The documents a materialize message stands for (None: its claim is gone)."""
    if not is_ref(batch):
        return batch
    if ctx.claims is None:
        from sophia_tasks.claims import store_for

        ctx.claims = store_for(ctx.settings)
        if ctx.claims is None:
            raise RuntimeError(f"a claim-checked batch {batch.get('$batch')} reached a worker with no claim store")
    return ctx.claims.get(batch)


@app.task(name="sophia.materialize", bind=True, base=StageTask, soft_time_limit=240, time_limit=300)
def materialize(self: Task, target: str, collection: str, documents: Any, attempt: int = 1,
                lane: str = "live") -> None:
    """Write one batch to one target; retried alone, so other targets never wait for it.

    ``documents`` is the list itself, a claim check (``sophia_tasks.claims``) or a coalesced cut of
    a target buffer (``sophia_tasks.ingest_buffer``); either is released only once this target's
    share is settled, so a crash before that redelivers a message whose batch is still there.
    """
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
                pipeline.record_error(ctx, "materialize", target, "expired", int(batch.get("n") or 0))
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


def write_and_settle(ctx: pipeline.Context, node: str | None, slot: str | None, target: str, collection: str,
                     documents: list[dict[str, Any]], attempt: int, lane: str,
                     task_id: str | None = None) -> pipeline.WriteResult:
    """Write; then each failed document is re-sent (new claim) or dead-lettered. ``slot``: the
    bulkhead slot to give back (None for an inline write, which holds none)."""
    try:
        try:
            result = pipeline.materialize_documents(ctx, target, collection, documents)
            error_reason = "data"
        except TransientTargetError as exc:
            result = pipeline.WriteResult(failed=[(d, str(exc)[:2000]) for d in documents])
            error_reason = "unreachable"
    finally:
        if slot is not None and node is not None:
            bulkhead(ctx).release(node, target, slot)
    if len(result.failed) < len(documents):
        pipeline.record_written(ctx, target, collection, documents, result, lane)
    if not result.failed:
        return result
    keyless = [(d, e) for d, e in result.failed if e.startswith("document has no key")]
    retryable = [(d, e) for d, e in result.failed if not e.startswith("document has no key")]
    pipeline.record_error(ctx, "materialize", target, error_reason, len(retryable))
    letters = [Letter(stage="materialize", target=target, collection=collection, payload=d, error=e,
                      event_id=meta(d).get("event_id"), attempts=attempt) for d, e in keyless]
    if retryable and attempt < ctx.settings.retry_max:
        countdown = pipeline.backoff_seconds(ctx.settings, attempt)
        log.warning("%s: %d document(s) of %s failed (attempt %d of %d), retrying in %.1fs: %s", target,
                    len(retryable), collection, attempt, ctx.settings.retry_max, countdown, retryable[0][1][:300])
        again = [d for d, _ in retryable]
        send_materialize(target, collection, claim(ctx, again, [target], f"{task_id}:retry" if task_id else None),
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


@app.task(name="sophia.replay", base=StageTask)
def replay(letter_ids: list[int]) -> int:
    """Put dead letters back into the chain at the stage where each one failed."""
    from sophia_tasks.replay import replay_letters

    return replay_letters(context(), letter_ids)


@app.task(name="sophia.purge_retention", base=StageTask)
def purge_retention() -> dict[str, int]:
    """Delete staging rows older than each binding's retention_days (Postgres keeps 30 days)."""
    from sophia_tasks.materializers import get_materializer

    ctx = context()
    purged: dict[str, int] = {}
    for mat in ctx.spec.materializations.values():
        if mat.endpoint != "postgres":
            continue
        writer = get_materializer("postgres", ctx.settings, ctx.spec)
        for binding in mat.bindings:
            if binding.retention_days:
                purged[str(binding.table)] = writer.purge_older_than(binding, binding.retention_days)  # type: ignore[attr-defined]
    log.info("retention purge: %s", purged)
    return purged
