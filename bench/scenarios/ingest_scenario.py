"""ingest: webhook accept rate at increasing concurrency, beside the floor app (same gunicorn settings)."""
from __future__ import annotations

import asyncio
from typing import Any

from bench import loadgen
from bench.calls import Calls
from bench.harness import Bench
from bench.scenarios.common import WEBHOOK, Sizes, headers, log, purge_broker
from bench.scenarios.profiling import profile_web


def ingest(bench: Bench, calls: Calls, sizes: Sizes, profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """Closed-loop single-event POSTs at each concurrency, floor app then ours, same bodies.

    The worker is stopped so the web tier is measured alone (on 2 cores a draining worker
    would take CPU from gunicorn, and the floor has no such neighbour); what is accepted
    stays on the broker and is purged afterwards.
    """
    bench.stop_role("worker")
    bench.start_web()
    bench.start_floor()
    h = headers(bench)

    def body() -> tuple[bytes, Any]:
        raw, eid, cid = calls.single_body()
        return raw, cid

    steps = []
    bench.rss.reset()
    for c in sizes.ingest_concurrency:
        log(f"ingest: concurrency {c}, floor app, {sizes.ingest_seconds:g}s")
        floor = asyncio.run(loadgen.closed_loop(bench.floor_url + "/floor", h, body, c, sizes.ingest_seconds,
                                                sizes.ingest_warmup, bench.server_cpu("floor"))).summary()
        log(f"ingest: concurrency {c}, webhook, {sizes.ingest_seconds:g}s")
        ours = asyncio.run(loadgen.closed_loop(bench.url + WEBHOOK, h, body, c, sizes.ingest_seconds,
                                               sizes.ingest_warmup, bench.server_cpu("web"))).summary()
        ratio = (ours["accepted_per_s"] / floor["accepted_per_s"]) if floor["accepted_per_s"] else None
        cpu_ratio = cpu_per_request_ratio(floor, ours)
        steps.append({"concurrency": c, "floor": floor, "ours": ours,
                      "ratio_to_floor": round(ratio, 3) if ratio is not None else None,
                      "cpu_ratio_to_floor": cpu_ratio})
        log(f"ingest: c={c} floor {floor['accepted_per_s']}/s p99 {floor['p99_ms']} ms | ours "
            f"{ours['accepted_per_s']}/s p99 {ours['p99_ms']} ms | ratio {steps[-1]['ratio_to_floor']} | "
            f"server CPU per request: floor {floor.get('server_cpu_ms_per_accepted')} ms, ours "
            f"{ours.get('server_cpu_ms_per_accepted')} ms (floor/ours {cpu_ratio})")
    memory = bench.rss.snapshot()
    bench.stop("floor")
    web_profile = None
    if profile is not None:
        web_profile = profile_web(bench, body, profile)
    on_broker = bench.queue_length("sophia.ingest")
    purge_broker(bench)
    bench.cache.flushdb()  # dedupe ids
    best_floor = max(s["floor"]["accepted_per_s"] or 0 for s in steps)
    best_ours = max(s["ours"]["accepted_per_s"] or 0 for s in steps)
    cpu_ratios = sorted(r for s in steps if (r := s["cpu_ratio_to_floor"]) is not None)
    return {
        "method": "closed loop (bench.loadgen, asyncio), one envelope per POST with a fresh event id and call id, "
                  f"{sizes.ingest_seconds:g}s per step after {sizes.ingest_warmup:g}s warm-up; floor app and "
                  "webhook alternate at each step under the same gunicorn config; worker stopped",
        "gunicorn": {"workers": bench.web_workers, "threads": bench.web_threads},
        "mean_call_bytes": round(calls.mean_call_bytes),
        "steps": steps,
        "peak_floor_per_s": best_floor,
        "peak_ours_per_s": best_ours,
        "peak_ratio": round(best_ours / best_floor, 3) if best_floor else None,
        # Steadier than the rates, which move with how gunicorn's workers share the connections.
        "median_cpu_ratio": cpu_ratios[len(cpu_ratios) // 2] if cpu_ratios else None,
        "ingest_messages_left_on_broker": on_broker,
        "memory": memory,
        **({"profile": web_profile} if web_profile is not None else {}),
    }


def cpu_per_request_ratio(floor: dict[str, Any], ours: dict[str, Any]) -> float | None:
    """The floor's server CPU per accepted request over ours (1.0: ours costs what the floor does)."""
    f, o = floor.get("server_cpu_ms_per_accepted"), ours.get("server_cpu_ms_per_accepted")
    return round(f / o, 3) if f and o else None
