"""naive: the one-chain-per-event / one-row-per-write baseline (bench/naive.py) on its own worker."""
from __future__ import annotations

import time
from typing import Any

from bench.calls import Calls
from bench.harness import Bench
from bench.scenarios.common import TARGETS, Sizes, log, purge_broker


def naive(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    n = sizes.naive_events
    bench.stop_role("worker")
    bench.stop_role("naive")
    purge_broker(bench)
    bench.clear_targets()
    from bench import naive as naive_app

    naive_app.ensure_tables()
    events = calls.events(n)
    t0 = time.monotonic()
    for ev in events:
        naive_app.send(ev)
    publish_s = time.monotonic() - t0
    log(f"naive: {n} chains published in {publish_s:.1f}s; starting the naive worker")
    bench.rss.reset()
    proc, t_spawn, t_ready = bench.start_naive_worker()
    counters_ = {
        "redis": lambda: bench.redis_count(naive_app.REDIS_PREFIX),
        "postgres": lambda: bench.pg_count(naive_app.PG_TABLE),
        "snowflake": lambda: bench.sf_count(naive_app.SF_TABLE),
    }
    done: dict[str, float] = {}
    counted = {t: 0 for t in TARGETS}
    deadline = t_ready + max(180.0, n / 5)
    last_print = last_change = time.monotonic()
    seen = dict(counted)
    while len(done) < 3 and time.monotonic() < deadline:
        if counted != seen:
            seen, last_change = dict(counted), time.monotonic()
        elif time.monotonic() - last_change > 60:
            log(f"naive: no progress for 60 s, giving up (see {bench.stack.workdir}/naive-*.log)")
            break
        for t in TARGETS:
            if t in done:
                continue
            try:
                counted[t] = counters_[t]()
            except Exception as exc:
                if "does not exist" not in str(exc):
                    raise
            if counted[t] >= n:
                done[t] = time.monotonic()
        if time.monotonic() - last_print > 5:
            log(f"naive: progress {counted}")
            last_print = time.monotonic()
        time.sleep(0.2)
    memory = bench.rss.snapshot()
    bench.stop_role("naive")
    per_target = {}
    for t in TARGETS:
        at = done.get(t)
        elapsed = (at - t_ready) if at else (time.monotonic() - t_ready)
        per_target[t] = {"complete": at is not None, "documents": counted[t], "seconds_from_ready": round(elapsed, 3),
                         "events_per_s": round((n if at else counted[t]) / elapsed, 1) if elapsed > 0 else None}
    log("naive: " + ", ".join(f"{t} {v['events_per_s']} ev/s" for t, v in per_target.items()))
    return {
        "method": f"{n} events, one Celery chain each (naive.validate -> naive.derive -> one write task per "
                  "target, one row per write), published straight to the broker with the naive worker "
                  f"stopped, then one worker (-A bench.naive, --concurrency {bench.worker_concurrency}) drains "
                  "them; timed from its 'ready.' line until each target holds N rows (polled every 0.2 s). "
                  "The rate is a steady-state per-event cost, so a smaller N than the pipeline drain's is "
                  "compared as a rate (events/s), not extrapolated to a total time",
        "events": n,
        "publish_s": round(publish_s, 2),
        "worker_start_s": round(t_ready - t_spawn, 3),
        "targets": per_target,
        "memory": memory,
    }
