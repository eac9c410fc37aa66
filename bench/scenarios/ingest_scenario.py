"""ingest: webhook accept rate against the floor app under gunicorn and under granian, in
interleaved rounds at one concurrency (issue #19, target 3)."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from bench import loadgen
from bench.calls import Calls
from bench.harness import FLOOR_SERVERS, Bench
from bench.scenarios.common import WEBHOOK, Sizes, headers, log, purge_broker
from bench.scenarios.profiling import profile_web
from bench.scenarios.rounds import compare, run_rounds


def ingest(bench: Bench, calls: Calls, sizes: Sizes, profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """Closed-loop single-event POSTs with ``sizes.connections`` connections, each round the floor
    under gunicorn, the floor under granian, then ours, with the same bodies.

    The worker is stopped so the web tier is measured alone (on 2 cores a draining worker
    would take CPU from the web, and the floor has no such neighbour); what is accepted
    stays on the broker and is purged afterwards.
    """
    bench.stop_role("worker")
    bench.start_web()
    h = headers(bench)
    floor_errors: dict[str, str] = {}
    for server in FLOOR_SERVERS:
        try:
            bench.start_floor(server)
        except Exception as exc:  # the other floor still gives a ratio; the report says which ran
            floor_errors[server] = f"{type(exc).__name__}: {exc}"[:500]
            log(f"ingest: the floor under {server} did not start: {floor_errors[server]}")

    def body() -> tuple[bytes, Any]:
        raw, _eid, cid = calls.single_body()
        return raw, cid

    def side(url: str, process: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            return asyncio.run(loadgen.closed_loop(url, h, body, sizes.connections, sizes.ingest_seconds,
                                                   sizes.ingest_warmup, bench.server_cpu(process))).summary()
        return run

    sides = [(f"floor-{server}", side(bench.floor_url_of(server) + "/floor", name))
             for server, name in FLOOR_SERVERS.items() if server not in floor_errors]
    sides.append(("ours", side(bench.url + WEBHOOK, "web")))
    bench.rss.reset()
    log(f"ingest: {sizes.rounds} rounds of {', '.join(n for n, _ in sides)}, {sizes.connections} connections, "
        f"{sizes.ingest_seconds:g}s each after {sizes.ingest_warmup:g}s warm-up")
    rounds = run_rounds(sides, sizes.rounds, "ingest")
    memory = bench.rss.snapshot()
    for name in FLOOR_SERVERS.values():
        bench.stop(name)
    web_profile = None
    if profile is not None:
        web_profile = profile_web(bench, body, profile)
    on_broker = bench.queue_length("sophia.ingest")
    purge_broker(bench)
    bench.cache.flushdb()  # dedupe ids
    result = compare(rounds, [n for n, _ in sides if n != "ours"])
    log(f"ingest: fastest floor {result['fastest_floor']}, ours / floor median {result['ratio']} "
        f"(rounds {result['ratios']})")
    return {
        "method": f"closed loop (bench.loadgen, asyncio), {sizes.connections} connections, one envelope per POST "
                  f"with a fresh event id and call id, {sizes.ingest_seconds:g}s per side after "
                  f"{sizes.ingest_warmup:g}s warm-up; each round: the floor app (parse the JSON, one Redis SET) "
                  "under gunicorn (the web's own config), under granian (--interface wsgi), then ours; "
                  "ratio = median over rounds of ours / the faster floor (by median) in the same round; worker "
                  "stopped; server CPU = the server's process tree + redis-server",
        "connections": sizes.connections,
        "gunicorn": {"workers": bench.web_workers, "threads": bench.web_threads},
        "granian": {"workers": bench.web_workers, "interface": "wsgi"},
        "floor_errors": floor_errors,
        "mean_call_bytes": round(calls.mean_call_bytes),
        "rounds": rounds,
        **result,
        "ingest_messages_left_on_broker": on_broker,
        "memory": memory,
        **({"profile": web_profile} if web_profile is not None else {}),
    }
