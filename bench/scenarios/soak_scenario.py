"""soak: steady webhook load while the worker is SIGKILLed on a timer; nothing lost, duplicated or
leaked. Not in the default set (10 minutes): ``python -m bench --scenario soak``."""
from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from bench import loadgen
from bench.calls import Calls
from bench.harness import OUR_PG_TABLE, OUR_SF_TABLE, Bench, tree_rss_mb
from bench.scenarios.common import TARGETS, WEBHOOK, Sizes, headers, log, purge_broker, worker_name
from bench.scenarios.targets import count_target


def _tree_rss(pid: int | None) -> tuple[float, float]:
    """(summed RSS, largest single process RSS) in MB of a process tree; (0, 0) if it is gone."""
    sizes = tree_rss_mb(pid)
    return sum(sizes), max(sizes, default=0.0)


def soak(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    """Steady webhook load with the worker SIGKILLed (whole process group) every ``soak_kill_every``
    seconds and a replacement started at once. Checks: every accepted event is in every target
    exactly once (rows = distinct keys = accepted), no dead letters, and memory flat (worker and
    web RSS sampled every 5 s; first against last minute)."""
    import signal as _signal

    vt = sizes.soak_visibility_timeout
    saved = {k: bench.stack.env.get(k) for k in ("SOPHIA_VISIBILITY_TIMEOUT", "SOPHIA_RETRY_BACKOFF_MAX")}
    # A killed worker's reserved messages come back after the visibility timeout: shortened here so
    # a 10-minute run sees them come back (production keeps 3600 s and waits that long).
    bench.stack.env.update({"SOPHIA_VISIBILITY_TIMEOUT": str(vt), "SOPHIA_RETRY_BACKOFF_MAX": str(max(1, vt // 4))})
    try:
        bench.stop_role("worker")
        bench.stop("web")
        bench.start_web()
        purge_broker(bench)
        bench.clear_targets()
        bench.start_worker()
        ns = "7"
        prefix = calls.prefix(ns)
        accepted: list[str] = []
        statuses: dict[int, int] = {}

        def body() -> tuple[bytes, Any]:
            eid, cid = calls.next_ids(ns)
            return calls.single[int(cid) % len(calls.single)].render(eid, cid), cid

        def on_done(tag: Any, status: int, _latency: float) -> None:
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                accepted.append(tag)

        box: dict[str, Any] = {}
        log(f"soak: {sizes.soak_rate:g} ev/s for {sizes.soak_seconds:g}s, worker SIGKILLed every "
            f"{sizes.soak_kill_every:g}s (visibility timeout {vt}s)")
        loader = threading.Thread(target=lambda: box.update(res=asyncio.run(loadgen.open_loop(
            bench.url + WEBHOOK, headers(bench), body, sizes.soak_rate, sizes.soak_seconds, on_done=on_done))),
            daemon=True)
        memory: list[dict[str, float]] = []
        t0 = time.monotonic()
        loader.start()
        kills: list[dict[str, Any]] = []
        next_kill = t0 + sizes.soak_kill_every
        next_sample = t0
        while loader.is_alive():
            now = time.monotonic()
            if now >= next_sample:
                w_sum, w_max = _tree_rss(bench.pid_of("worker"))
                web = bench.stack.processes.get("web")
                web_sum, web_max = _tree_rss(web.popen.pid if web else None)
                memory.append({"t": round(now - t0, 1), "worker_mb": round(w_sum, 1), "worker_max_mb": round(w_max, 1),
                               "web_mb": round(web_sum, 1),
                               "redis_used_mb": round(int(bench.broker.info("memory")["used_memory"]) / 1e6, 1)})
                next_sample = now + 5
            if now >= next_kill and now - t0 < sizes.soak_seconds - 5:
                name = worker_name(bench)
                proc = bench.stack.processes.pop(name)
                os.killpg(proc.popen.pid, _signal.SIGKILL)
                proc.popen.wait(10)
                bench.rss.unwatch("worker")
                _, spawned, ready = bench.start_worker()
                kills.append({"at_s": round(now - t0, 1), "killed": name, "replacement_ready_s": round(ready - now, 2),
                              "accepted_so_far": len(accepted)})
                log(f"soak: killed {name} at {now - t0:.0f}s; replacement ready after {ready - now:.1f}s")
                next_kill += sizes.soak_kill_every
            time.sleep(0.2)
        loader.join()
        res: loadgen.LoadResult = box["res"]
        n = len(accepted)
        log(f"soak: load done, {n} accepted of {res.sent}; waiting for every target")
        # Until every target holds every accepted event, or nothing has moved for 3 minutes (a
        # stall: what is missing then is reported as lost), at most 45 minutes.
        deadline = time.monotonic() + 2700
        counts: dict[str, int] = {}
        last_change, last_counts = time.monotonic(), None
        while time.monotonic() < deadline and time.monotonic() - last_change < 180:
            counts = {t: count_target(bench, t, prefix) for t in TARGETS}
            if all(c >= n for c in counts.values()):
                break
            if counts != last_counts:
                last_change, last_counts = time.monotonic(), counts
                log(f"soak: draining, {counts} of {n}")
            time.sleep(5)
        drained_after = round(time.monotonic() - t0 - sizes.soak_seconds, 1)
        with bench.pg().cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT call_id) FROM {OUR_PG_TABLE} WHERE call_id LIKE %s",
                        (prefix + "%",))
            pg_rows, pg_distinct = (int(x) for x in cur.fetchone())
        cur = bench.sf().cursor()
        cur.execute(f'SELECT COUNT(*), COUNT(DISTINCT "CALL_ID") FROM "{OUR_SF_TABLE}" WHERE "CALL_ID" LIKE ?',
                    [prefix + "%"])
        sf_rows, sf_distinct = (int(x) for x in cur.fetchone())
        memory_after = _tree_rss(bench.pid_of("worker"))
        time.sleep(2)  # the last releases
        leftover_batches = sum(1 for k in bench.broker.scan_iter(match="sophia:batch:*", count=1000)
                               if not k.endswith(b":pending"))
        first = [m for m in memory if m["t"] <= 60]
        last = [m for m in memory if m["t"] >= sizes.soak_seconds - 60]
        lost = {t: max(0, n - c) for t, c in counts.items()}
        out = {
            "method": "open-loop webhook load (one event per POST, fresh call ids under one prefix); the worker's "
                      "process group SIGKILLed on a timer and a replacement started at once; after the load, "
                      "every target counted by call-id prefix (Redis SCAN, SELECT count(*) and count(DISTINCT) in "
                      "PostgreSQL and Snowflake) until each holds every accepted event; RSS of the worker and web "
                      "process trees sampled every 5 s",
            "rate": sizes.soak_rate, "seconds": sizes.soak_seconds, "kill_every_s": sizes.soak_kill_every,
            "visibility_timeout_s": vt,
            "webhook": res.summary(), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "accepted": n, "kills": kills, "counts": counts, "lost": lost,
            "postgres_rows_distinct": [pg_rows, pg_distinct], "snowflake_rows_distinct": [sf_rows, sf_distinct],
            "duplicated": {"postgres": pg_rows - pg_distinct, "snowflake": sf_rows - sf_distinct},
            "drained_s_after_load": drained_after,
            "dead_letters": bench.dead_letters(),
            "memory_timeline": memory,
            "memory_first_minute_peak": {k: max((m[k] for m in first), default=None)
                                         for k in ("worker_mb", "worker_max_mb", "web_mb")},
            "memory_last_minute_peak": {k: max((m[k] for m in last), default=None)
                                        for k in ("worker_mb", "worker_max_mb", "web_mb")},
            "worker_mb_after_drain": round(memory_after[0], 1),
            "leftover_claim_batches": leftover_batches,
            "broker_unacked_after_drain": int(bench.broker.hlen("unacked")),
        }
        log(f"soak: accepted {n}; counts {counts}; lost {lost}; duplicated {out['duplicated']}; dead letters "
            f"{out['dead_letters']}; worker RSS peak first minute {out['memory_first_minute_peak']['worker_mb']} MB, "
            f"last minute {out['memory_last_minute_peak']['worker_mb']} MB")
        return out
    finally:
        for k, v in saved.items():
            if v is None:
                bench.stack.env.pop(k, None)
            else:
                bench.stack.env[k] = v
        bench.stop_role("worker")
