"""The base of every stage task: retries with backoff, then the batch's documents are dead-lettered.

A stage task that fails for good never drops its batch: whatever it carried (the events,
a claim check, a coalesced cut) is read back and written to the dead-letter store, to be
replayed at the stage that failed.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from celery import Task
from celery.exceptions import Retry

from sophia_tasks.core.documents import meta
from sophia_tasks.core.gcpause import cycle_collector_paused
from sophia_tasks.ingest.buffer import is_ref as is_events_ref
from sophia_tasks.pipeline.claim_checks import is_ref
from sophia_tasks.pipeline.fanout import documents_of
from sophia_tasks.pipeline.records import record_error
from sophia_tasks.pipeline.runtime import buffer_of, context
from sophia_tasks.store.deadletter import Letter

log = logging.getLogger(__name__)


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
        (``sophia_tasks.core.gcpause``: about a fifth of the validate path's CPU otherwise)."""
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
            record_error(ctx, letters[0].stage, letters[0].target, "exception", len(letters))
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
