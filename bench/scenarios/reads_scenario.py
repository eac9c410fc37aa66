"""reads: ``GET /v1/collections/<c>/documents/<key>`` against a bare Flask endpoint doing one Redis
GET on the same server (the web's own: granian by default), in interleaved rounds; then a fixed rate for its latency
percentiles (issue #19, target 4)."""
from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable

from bench import loadgen
from bench.calls import Calls
from bench.harness import FLOOR_NAMES, OUR_PREFIX, Bench
from bench.scenarios.common import DERIVED, Sizes, enriched_rows, log
from bench.scenarios.rounds import compare, run_rounds

READ_PATH = f"/v1/collections/{DERIVED}/documents/"


def seed_documents(bench: Bench, calls: Calls, n: int) -> list[str]:
    """``n`` derived call documents written to Redis by the project's own materializer (so the
    bytes read are the bytes the pipeline stores); their keys."""
    from sophia_tasks.materializers.redis import RedisMaterializer
    from sophia_tasks.settings import load_settings

    docs, spec = enriched_rows(calls, n)
    binding = next(m.binding_for(DERIVED) for m in spec.materializations.values()
                   if m.endpoint == "redis" and m.binding_for(DERIVED) is not None)
    writer = RedisMaterializer(load_settings(), spec)
    written = writer.write_batch(binding, docs).written
    writer.close()
    if written != len(docs):
        raise RuntimeError(f"reads: seeding wrote {written} of {len(docs)} documents to Redis")
    return [str(spec.collection(DERIVED).key_of(d)) for d in docs]


def reads(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    bench.stop_role("worker")
    bench.start_web()
    server = bench.same_server_floor
    bench.start_floor(server)
    floor_name, floor_url = FLOOR_NAMES[server], bench.floor_url_of(server)
    bench.cache.flushdb()
    keys = seed_documents(bench, calls, sizes.reads_documents)
    sample = keys[:200]
    mean_bytes = round(sum(int(bench.cache.strlen(OUR_PREFIX + k)) for k in sample) / max(1, len(sample)))
    h = {"Authorization": f"Bearer {bench.read_token}"}

    def paths(prefix: str) -> loadgen.BodyFn:
        cycle = itertools.cycle([(prefix + k).encode() for k in keys])
        return lambda: (next(cycle), None)

    ours_paths, floor_paths = paths(READ_PATH), paths("/floor/documents/")
    probe = asyncio.run(loadgen.closed_loop(bench.url, h, ours_paths, 1, 0.2, method="GET")).summary()
    if not probe["accepted"]:
        raise RuntimeError(f"reads: the documents endpoint answered {probe['statuses']} ({probe['first_error']}): "
                           "is SOPHIA_READ_TOKENS set for the web app?")

    def side(url: str, body: loadgen.BodyFn, process: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            return asyncio.run(loadgen.closed_loop(url, h, body, sizes.connections, sizes.reads_round_seconds,
                                                   1.0, bench.server_cpu(process), method="GET")).summary()
        return run

    bench.rss.reset()
    log(f"reads: {sizes.rounds} rounds of the floor (the web's server), ours; {sizes.connections} connections, "
        f"{sizes.reads_round_seconds:g}s each")
    rounds = run_rounds([("floor", side(floor_url, floor_paths, floor_name)),
                         ("ours", side(bench.url, ours_paths, "web"))], sizes.rounds, "reads")
    result = compare(rounds, ["floor"])
    fixed: dict[str, Any] = {}
    for name, url, body in (("floor", floor_url, floor_paths),
                            ("ours", bench.url, ours_paths)):
        log(f"reads: {name} at {sizes.reads_rate:g} req/s for {sizes.reads_seconds:g}s (open loop)")
        res = asyncio.run(loadgen.open_loop(url, h, body, sizes.reads_rate, sizes.reads_seconds, method="GET"))
        fixed[name] = {**res.summary(), "achieved_rate": round(res.sent / res.duration_s, 1)
                       if res.duration_s else None}
    memory = bench.rss.snapshot()
    bench.stop(floor_name)
    bench.cache.flushdb()
    log(f"reads: ours / floor median {result['ratio']}; at {sizes.reads_rate:g} req/s p99 ours "
        f"{fixed['ours']['p99_ms']} ms, floor {fixed['floor']['p99_ms']} ms")
    return {
        "method": f"{len(keys)} derived documents written to Redis by the project's materializer; GET "
                  f"{READ_PATH}<key> with a read token, keys in turn. Rounds: closed loop, {sizes.connections} "
                  f"connections, {sizes.reads_round_seconds:g}s per side after 1s warm-up, the floor app's "
                  "GET /floor/documents/<key> (one Redis GET) under the web's own server and settings, then ours; "
                  "ratio = median over rounds of ours / floor. Then each at a fixed rate "
                  f"({sizes.reads_rate:g} req/s open loop for {sizes.reads_seconds:g}s, response time from the "
                  "scheduled send time); worker stopped",
        "documents": len(keys),
        "mean_document_bytes": mean_bytes,
        "rounds": rounds,
        **result,
        "rate": sizes.reads_rate,
        "seconds": sizes.reads_seconds,
        "fixed_rate": fixed,
        "memory": memory,
    }
