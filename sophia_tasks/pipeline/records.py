"""What a stage records about a batch: counters, the lag histogram, throughput, error counts."""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from sophia_tasks.core.documents import meta, parse_time, utcnow
from sophia_tasks.ingest.buffer import coalesces
from sophia_tasks.materializers import WriteResult
from sophia_tasks.observe import trace
from sophia_tasks.observe.stats import LAG_BUCKETS
from sophia_tasks.observe.stats import field as stats_field
from sophia_tasks.pipeline.runtime import Context

log = logging.getLogger(__name__)

def record_written(ctx: Context, target: str, collection: str, documents: list[dict[str, Any]],
                   result: WriteResult, lane: str | None = None, attempt: int = 1) -> None:
    """Counters, the lag histogram, throughput and the staleness clock of one written batch; for a
    live batch to a target that is not coalesced also its worst lag and when (``live_lag``,
    ``live_lag_at``: the bulk window yields to live events on it, ``sophia_tasks.pipeline.bulk_window``)."""

    now = utcnow()
    items: list[tuple[str, Mapping[str, Any] | None, float]] = [
        ("documents_written", {"target": target, "collection": collection}, result.written),
        ("documents_stale", {"target": target, "collection": collection}, result.skipped_stale),
        ("batches_written", {"target": target, "collection": collection}, 1),
        ("bytes_written", {"target": target}, 0),
    ]
    failed_ids = {id(d) for d, _ in result.rejected}
    # Summed here, so a batch costs a handful of Redis commands rather than a dozen per document.
    lag_sum, lag_count, lag_max = 0.0, 0, 0.0
    buckets = dict.fromkeys(LAG_BUCKETS, 0)
    for doc in documents:
        if id(doc) in failed_ids:
            continue
        received = parse_time(meta(doc).get("received_at"))
        if received is None:
            continue
        lag = max(0.0, (now - received).total_seconds())
        lag_sum += lag
        lag_count += 1
        if lag > lag_max:
            lag_max = lag
        for le in LAG_BUCKETS:
            if lag <= le:
                buckets[le] += 1
    if lag_count:
        items.append(("lag_seconds_sum", {"target": target}, lag_sum))
        items.append(("lag_seconds_count", {"target": target}, lag_count))
        items.extend(("lag_seconds_bucket", {"target": target, "le": le}, n) for le, n in buckets.items() if n)
    # The counters, this stage's throughput and the gauges in one round trip.
    at = time.time()
    gauges = {stats_field("last_written", {"target": target}): at}
    if lane == "live" and lag_count and not coalesces(ctx.settings, target):  # a coalesced target waits on purpose
        gauges[stats_field("live_lag", {"target": target})] = round(lag_max, 3)
        gauges[stats_field("live_lag_at", {"target": target})] = at
    ctx.stats.record(items, {"materialize": len(documents) - len(result.rejected)}, gauges,
                     trace=trace.written(ctx.settings, target, documents, failed_ids, attempt))


def record_error(ctx: Context, stage: str, target: str | None, reason: str, n: int = 1,
                 traced: trace.TraceBatch | None = None) -> None:
    """Count an error; ``traced``: the trace fields of the documents it concerns, in the same round trip."""
    ctx.stats.incr([("errors", {"stage": stage, "target": target or "", "reason": reason}, n)], trace=traced)


def record_test_deliveries(ctx: Context, documents: list[dict[str, Any]]) -> None:
    """Test deliveries (``isTest`` of a wrapped body) are acknowledged and counted, never materialized."""
    ctx.stats.incr([("test_deliveries", {"collection": meta(d).get("collection")}, 1) for d in documents])
    for d in documents:
        collection = str(meta(d).get("collection"))
        key = ctx.spec.collection(collection).key_of(d) if collection in ctx.spec.collections else None
        log.info("test delivery %s for %s %s acknowledged, not materialized", meta(d).get("event_id"),
                 collection, key, extra={"event_id": meta(d).get("event_id")})
