"""Putting events on the broker and counting them in the targets: the one yardstick the drain,
latency, backfill, soak and profile runs all time against."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from bench import loadgen
from bench.calls import Calls
from bench.harness import OUR_PG_TABLE, OUR_PREFIX, OUR_SF_TABLE, Bench
from bench.scenarios.common import COUNTERS, TARGETS, WEBHOOK, headers, written_fields


def load_broker(bench: Bench, calls: Calls, n: int, per_body: int,
                call_ids: list[str] | None = None) -> dict[str, Any]:
    """POST ``n`` events in bodies of ``per_body``; their call ids are appended to ``call_ids``."""
    bodies = []
    left = n
    while left > 0:
        k = min(per_body, left)
        body, cids = calls.batch_body(k)
        bodies.append(body)
        if call_ids is not None:
            call_ids.extend(cids)
        left -= k
    res = asyncio.run(loadgen.post_batches(bench.url + WEBHOOK, headers(bench), bodies, concurrency=4))
    summary = res.summary()
    if res.accepted != len(bodies):
        raise RuntimeError(f"loading the broker: {res.accepted} of {len(bodies)} bodies accepted: {summary}")
    return {"bodies": len(bodies), "events_per_body": per_body, "seconds": round(res.duration_s, 2),
            "events_per_s": round(n / res.duration_s, 1) if res.duration_s else None}


def next_count_in(counted: int, n: int, elapsed: float, floor: float = 0.25, cap: float = 5.0) -> float:
    """Seconds until the next count of a target's rows: a tenth of the time the rest should take at
    the rate so far, between ``floor`` and ``cap``.

    Why: counting in the targets (a Redis SCAN of the whole key space, ``count(*)`` in PostgreSQL and
    the emulator) is work on the same two cores as the stack. At 160,000 keys one SCAN took 0.15 s of
    Redis CPU, so counting every second spent a sixth of a core of the machine under test. Counts
    come quickly near the end (so the completion time stays within ``floor`` on a steady rate) and
    rarely while much is left; a burst that finishes early is seen at most ``cap`` late.
    """
    if counted <= 0 or elapsed <= 0:
        return 1.0
    if counted >= n:
        return floor
    remaining_s = (n - counted) * elapsed / counted
    return max(floor, min(cap, remaining_s / 10))


def wait_targets(bench: Bench, n: int, t0: float, timeout: float, targets: tuple[str, ...] = TARGETS,
                 progress: Callable[[dict[str, int]], None] | None = None,
                 call_ids: list[str] | None = None) -> dict[str, Any]:
    """Times at which each target holds ``n`` documents of the pipeline.

    Progress is read every 20 ms from the pipeline's own ``documents_written`` counters (one
    HMGET; they are incremented right after each write). A target is done when counting in the
    target itself (``count_target``: in Redis EXISTS on ``call_ids`` when given, else a SCAN of the
    key prefix; SELECT count(*) in PostgreSQL; SELECT COUNT(*) through the Snowflake connector)
    finds ``n``: at once when its counter reaches ``n``, and otherwise on the schedule of
    ``next_count_in`` (in case a counter is lost).
    """
    fields = written_fields()
    base = {t: 0.0 for t in targets}
    done: dict[str, float] = {}
    counted: dict[str, int] = {t: 0 for t in targets}
    last_real = {t: t0 for t in targets}
    real_every = {t: 1.0 for t in targets}
    counter_hit: dict[str, float] = {}
    counts: dict[str, int] = {t: 0 for t in targets}
    deadline = t0 + timeout
    last_print = time.monotonic()
    while len(done) < len(targets) and time.monotonic() < deadline:
        now = time.monotonic()
        values = bench.cache.hmget(COUNTERS, [fields[t] for t in targets])
        for t, v in zip(targets, values, strict=True):
            if t not in counter_hit and v is not None and float(v) - base[t] >= n:
                counter_hit[t] = now
        for t in targets:
            if t in done:
                continue
            if now - last_real[t] >= real_every[t] or t in counter_hit:
                counted[t] = count_target(bench, t, call_ids=call_ids)
                counts[t] += 1
                last_real[t] = time.monotonic()
                real_every[t] = next_count_in(counted[t], n, last_real[t] - t0)
                if counted[t] >= n:
                    done[t] = min(counter_hit.get(t, last_real[t]), last_real[t])
        if progress is not None and now - last_print > 5:
            progress(dict(counted))
            last_print = now
        time.sleep(0.02)
    for t in targets:
        if t not in done:
            counted[t] = count_target(bench, t, call_ids=call_ids)
    return {"done_at": done, "counted": counted, "counts": counts,
            "counter_hit_at": {t: round(v - t0, 2) for t, v in counter_hit.items()}}


def count_target(bench: Bench, target: str, ids: str = "", call_ids: list[str] | None = None) -> int:
    """Documents of the pipeline in ``target``: all, those whose call id starts with ``ids``, or, in
    Redis when the run knows them, those of ``call_ids`` (EXISTS on exactly those keys: a SCAN walks
    the whole key space, dedupe claims and live documents included, at 10-50 times the cost)."""
    try:
        if target == "redis":
            if call_ids is not None:
                return bench.redis_present(call_ids, OUR_PREFIX)
            return bench.redis_count(OUR_PREFIX, ids)
        if target == "postgres":
            return bench.pg_count(OUR_PG_TABLE, ids)
        return bench.sf_count(OUR_SF_TABLE, ids)
    except Exception as exc:  # a table not created yet by the first batch
        if "does not exist" in str(exc):
            return 0
        raise
