"""latency and cpu: steady open-loop webhook load (one event per POST) with the worker running.

latency  receipt-to-materialized quantiles per target at 500 ev/s (issue #19, target 2)
cpu      CPU per live event of each process at 350 ev/s (issue #19, target 1)
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import loadgen
from bench.calls import Calls
from bench.harness import Bench
from bench.scenarios.common import (
    TARGETS,
    WEBHOOK,
    Sizes,
    counters,
    cpu_per_event,
    headers,
    log,
    log_size,
    purge_broker,
    task_stats,
    worker_name,
    written_fields,
)
from bench.scenarios.lag import LagSampler, lag_histogram
from bench.scenarios.targets import wait_targets


def steady(bench: Bench, calls: Calls, rate: float, seconds: float, what: str,
           sample_lag: bool = True) -> dict[str, Any]:
    """``rate`` single-event POSTs a second for ``seconds``, then wait until every target holds them.

    Process CPU (``RssSampler``) and the pipeline's lag histogram are read from just before the
    first POST to the moment the last target holds every accepted event, so the CPU of finishing
    the work is counted with it. ``sample_lag``: also poll every 10th event in Redis and PostgreSQL
    from the harness (a cross-check that costs the two services CPU: off when measuring CPU).
    """
    bench.start_web()
    if bench.pid_of("worker") is None:
        bench.start_worker()
    purge_broker(bench)
    bench.clear_targets()
    # Warm the worker's connections and the tables (first batch creates them) before measuring.
    warm = asyncio.run(loadgen.open_loop(bench.url + WEBHOOK, headers(bench),
                                         lambda: (calls.single_body()[0], None), 50, 2.0))
    wait_targets(bench, warm.accepted, time.monotonic(), 60)  # their lag stays out of the measurement
    time.sleep(0.5)
    before = counters(bench)
    log_offset = log_size(bench)
    fields = written_fields()
    sampler = LagSampler(bench).start() if sample_lag else None
    bench.rss.reset()
    bench.rss.sample(walk=True)  # the CPU baseline now, not at the sampler's next tick

    def body() -> tuple[bytes, Any]:
        raw, _eid, cid = calls.single_body()
        return raw, cid

    log(f"{what}: {rate:g} ev/s for {seconds:g}s (open loop)")
    res = asyncio.run(loadgen.open_loop(bench.url + WEBHOOK, headers(bench), body, rate, seconds,
                                        on_sent=sampler.on_sent if sampler else None,
                                        on_done=sampler.on_done if sampler else None))
    accepted = res.accepted
    t_load_end = time.monotonic()
    deadline = t_load_end + 120
    while time.monotonic() < deadline:
        now = counters(bench)
        if all(now.get(fields[t], 0.0) - before.get(fields[t], 0.0) >= accepted for t in TARGETS):
            break
        time.sleep(0.2)
    drained_s = round(time.monotonic() - t_load_end, 2)
    memory = bench.rss.snapshot()
    if sampler is not None:
        sampler.finish()
    after = counters(bench)
    written = {t: int(after.get(fields[t], 0.0) - before.get(fields[t], 0.0)) for t in TARGETS}
    hist = lag_histogram(before, after)
    web = res.summary()
    log(f"{what}: offered {web['sent']} accepted {accepted}; web p99 {web['p99_ms']} ms; lag p99 "
        + ", ".join(f"{t} {hist[t]['p99_s']}s" for t in TARGETS) + f"; all written {drained_s}s after the load")
    return {
        "rate": rate,
        "seconds": seconds,
        "webhook": web,
        "achieved_rate": round(res.sent / res.duration_s, 1) if res.duration_s else None,
        "materialized": written,
        "drained_s_after_load": drained_s,
        "lag_histogram": hist,
        **({"lag_sampled": sampler.summary()} if sampler is not None else {}),
        "dead_letters": bench.dead_letters(),
        "worker_tasks": task_stats(bench.stack.processes[worker_name(bench)].log_path, log_offset),
        "memory": memory,
        "cpu": cpu_per_event(memory, accepted),
    }


def latency(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    out = steady(bench, calls, sizes.latency_rate, sizes.latency_seconds, "latency")
    return {
        "method": "open-loop webhook load (one event per POST, bench.loadgen on asyncio, "
                  "response time from the scheduled send "
                  "time); receipt-to-materialized lag per target from the pipeline's own lag histogram "
                  "(sophia:stats:counters lag_seconds_bucket deltas, received_at in _meta to the write, "
                  "quantiles interpolated inside buckets 0.05/0.1/0.25/0.5/1/2/5 s as status.quantile does; "
                  "share_within_s is exact at bucket bounds); cross-check: every 10th event polled for in "
                  "Redis and PostgreSQL from the harness every 50 ms (send to first seen, includes HTTP)",
        **out,
    }


def cpu(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    out = steady(bench, calls, sizes.cpu_rate, sizes.cpu_seconds, "cpu", sample_lag=False)
    c = out["cpu"]
    log("cpu: ms per event " + ", ".join(f"{r} {v}" for r, v in c["per_process_ms"].items())
        + f"; ours {c['ours_ms']}")
    return {
        "method": f"open-loop webhook load, one event per POST at {sizes.cpu_rate:g} ev/s for {sizes.cpu_seconds:g}s "
                  "with the worker running; CPU seconds (user + system, psutil) of each process tree and "
                  "service from the first POST until every target holds every accepted event, divided by "
                  "the accepted events. Ours = web (its server's tree) + worker (Celery tree) + postgres (every "
                  "postgres process) + redis (redis-server); the Snowflake emulator and the load generator "
                  "are reported, not counted. No harness polling of the targets (only the counters hash)",
        **out,
    }
