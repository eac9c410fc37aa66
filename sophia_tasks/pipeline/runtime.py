"""The worker's per-process runtime: the pipeline context and the objects one process keeps.

Settings and the flow spec come from the Celery app that runs the task; clients are
opened after the pool forks (``sophia_tasks.core.process``). Tasks publish the next
stage by name through ``sophia_tasks.messaging.routing``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from celery import current_app

from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.core.process import ProcessLocal
from sophia_tasks.flows import load_spec
from sophia_tasks.ingest.buffer import IngestBuffer, buffer_for, target_buffer
from sophia_tasks.messaging import routing
from sophia_tasks.messaging.config import settings_of, spec_of
from sophia_tasks.observe.stats import Stats
from sophia_tasks.pipeline.bulk_window import BulkWindow, window_for
from sophia_tasks.pipeline.bulkhead import Bulkhead
from sophia_tasks.pipeline.claim_checks import ClaimStore, store_for
from sophia_tasks.settings import Settings
from sophia_tasks.store.deadletter import DeadLetterStore
from sophia_tasks.store.sealing import Sealer, sealer_for

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Context:
    """What a stage needs in one process: settings, the spec, and the clients of its stores."""

    settings: Settings
    spec: FlowSpec
    dlq: DeadLetterStore
    stats: Stats
    claims: ClaimStore | None = None
    events: IngestBuffer | None = None
    sealer: Sealer = field(default_factory=lambda: Sealer(()))


def build_context(settings: Settings, spec: FlowSpec | None = None) -> Context:
    spec = spec or load_spec(settings.flow_path)
    claims = store_for(settings)
    events = buffer_for(settings, claims.client) if claims is not None else None
    sealer = sealer_for(settings)
    return Context(settings=settings, spec=spec, dlq=DeadLetterStore(settings.postgres_dsn, sealer=sealer),
                   stats=Stats(settings.redis_url), claims=claims, events=events, sealer=sealer)


#: Everything this process keeps: its context, bulkheads, the bulk window, target buffers.
_kept: ProcessLocal[Any, Any] = ProcessLocal()


def kept(key: Any, make: Callable[[], T]) -> T:
    """The object ``make()`` built for ``key`` in this process (Celery's children are forked)."""
    return _kept.get_or_make(key, make)


def context() -> Context:
    """One per process: settings and spec from the app, clients opened after the fork."""
    return kept("context", lambda: build_context(settings_of(), spec_of()))


def bulkhead(ctx: Context) -> Bulkhead:
    return kept("bulkhead", lambda: Bulkhead(ctx.stats.client, ctx.settings.target_concurrency))


#: A validate slot held by a process that died frees itself after this long (a batch validates in seconds).
VALIDATE_SLOT_TTL = 60.0


def validate_slots(ctx: Context) -> Bulkhead:
    """Why a cap: validate is CPU-bound, and the pool has more processes than cores (for Snowflake
    waits and live headroom). Six validates at once on 2 cores added no throughput and starved
    every other process: the Snowflake emulator drained at 0.69x its raw rate with 6, 0.90x with
    3 pool processes (docs/benchmarks.md)."""
    return kept("validate_slots", lambda: Bulkhead(ctx.stats.client, ctx.settings.validate_concurrency,
                                                   slot_ttl=VALIDATE_SLOT_TTL))


def bulk_window(ctx: Context) -> BulkWindow:
    return kept("bulk_window", lambda: window_for(ctx.settings, ctx.stats.client))


def claim_store(ctx: Context, what: str) -> ClaimStore:
    """The claim check store on the broker's Redis; ``what`` needs one (a claim check or a buffer)."""
    if ctx.claims is None:
        ctx.claims = store_for(ctx.settings)
        if ctx.claims is None:
            raise RuntimeError(f"{what} needs a Redis broker")
    return ctx.claims


def buffer_of(ctx: Context, target: str, collection: str, lane: str) -> IngestBuffer:
    """The target buffer of ``target`` for ``collection``, on the broker's Redis (the claim store's client)."""
    return kept(("buffer", target, collection, lane),
                lambda: target_buffer(ctx.settings, claim_store(ctx, f"{target}: a coalesced batch").client,
                                      target, collection, lane))


def send_validate(events: Any, lane: str = "live", targets: list[str] | None = None,
                  slot: str | None = None) -> None:
    routing.send_validate(current_app, context().settings, events, lane, targets, slot)


def send_derive(collection: str, documents: list[dict[str, Any]], lane: str = "live",
                targets: list[str] | None = None) -> None:
    routing.send_derive(current_app, context().settings, collection, documents, lane, targets)


def send_materialize(target: str, collection: str, documents: Any, attempt: int = 1,
                     countdown: float | None = None, lane: str = "live") -> None:
    routing.send_materialize(current_app, context().settings, target, collection, documents, attempt, countdown,
                             lane)
