"""CPU of recording event traces (``sophia_tasks.observe.trace``): the web's accept and the stages' stats
round trips, with tracing on and off, in alternating rounds.

Why: the trace is written on the hot path of every event (the web's dedupe call, and the stats round
trip of validate, derive and each target's write), so its cost must stay a small share of the
pipeline's CPU. The whole-stack figure (``python -m bench --scenario latency`` with ``SOPHIA_TRACE=1``
and ``=0``) is the one that counts, but on a shared 2-core machine its noise is larger than the
trace's cost; this isolates the code the trace adds, client and server side.

Method: a private redis-server on a free port (its own CPU read from INFO, nothing else on it).
Web: ``Services.accept`` of one event per call (the live path: one request, one event), broker and
cache on that server (the one-trip script). Worker: per batch of 500 corpus events, the five stats
round trips a live batch makes (validate, derive, three targets' writes) with the trace fields built
and sent, or not; validation and derivation themselves run once before timing. Process CPU
(``time.process_time``) and the server's ``used_cpu_user + used_cpu_sys`` per event, ``--rounds``
rounds each way, alternating; medians.

    .venv/bin/python bench/bench_trace.py [--events 10000] [--requests 3000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from sophia_tasks.dev.stack import free_port  # noqa: E402
from sophia_tasks.flows import load_spec  # noqa: E402
from sophia_tasks.observe import trace  # noqa: E402
from sophia_tasks.observe.stats import Stats  # noqa: E402
from sophia_tasks.pipeline import stages  # noqa: E402
from sophia_tasks.settings import Settings, load_settings  # noqa: E402

TARGETS = ("redis", "postgres", "snowflake")


def server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def worker_round(stats: Stats, settings: Settings, spec: Any, batches: list[tuple[Any, Any, list]]) -> None:
    """What a live batch sends to the stats Redis: validate, derive, and one write per target."""
    for validated, derived, docs in batches:
        stats.record([("documents_validated", {"collection": "gong_calls"}, len(docs))], {"validate": len(docs)},
                     trace=trace.validated(settings, spec, validated, "task-" + uuid.uuid4().hex, "q:1"))
        stats.record([("documents_derived", {"collection": "gong_calls_enriched"}, len(docs))],
                     {"derive": len(docs)}, trace=trace.derived(settings, derived))
        for target in TARGETS:
            stats.record([("documents_written", {"target": target, "collection": "gong_calls_enriched"},
                           len(docs))], {"materialize": len(docs)}, {f"last_written|target={target}": time.time()},
                         trace=trace.written(settings, target, docs, set(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10000, help="events per worker round (batches of 500)")
    parser.add_argument("--requests", type=int, default=3000, help="webhook accepts per web round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-trace-"))
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(50):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        run(args, port, client)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, port: int, client: redis.Redis) -> None:
    from web.services import Services

    corpus = [json.loads(line) for line in (ROOT / "tests/fixtures/gong_calls_corpus.ndjson").open()]
    base = Settings()
    spec = load_spec(base.flow_path)
    batches = []
    for start in range(0, args.events, 500):
        events = [{"event_id": f"e{start + i}", "collection": "gong_calls",
                   "received_at": "2026-12-02T10:00:00.000000Z", "published_at": "2026-12-02T10:00:00.000000Z",
                   "source": "webhook", "is_test": False, "document": corpus[(start + i) % len(corpus)]}
                  for i in range(500)]
        validated = stages.validate_events(spec, events)
        derived = stages.derive_documents(spec, "gong_calls", validated.documents["gong_calls"])
        batches.append((validated, derived, derived.documents["gong_calls_enriched"]))
    url = f"redis://127.0.0.1:{port}/1"
    env = {"SOPHIA_WEBHOOK_TOKENS": "t", "SOPHIA_BROKER_URL": f"redis://127.0.0.1:{port}/0", "SOPHIA_REDIS_URL": url}
    results: dict[str, dict[str, list[float]]] = {}
    for mode in ("on", "off"):
        results[mode] = {"web_client": [], "web_server": [], "worker_client": [], "worker_server": []}
    for r in range(args.rounds):
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
            settings = base.with_overrides(trace_enabled=mode == "on")
            stats = Stats(url)
            worker_round(stats, settings, spec, batches[:1])  # loads the script, opens the connection
            cpu, srv = time.process_time(), server_cpu(client)
            worker_round(stats, settings, spec, batches)
            results[mode]["worker_client"].append((time.process_time() - cpu) / args.events * 1e6)
            results[mode]["worker_server"].append((server_cpu(client) - srv) / args.events * 1e6)

            svc = Services(load_settings({**env, "SOPHIA_TRACE": "1" if mode == "on" else "0"}), spec)
            prefix = uuid.uuid4().hex
            reqs = [[{"event_id": f"{prefix}-{i}", "collection": "gong_calls", "source": "webhook",
                      "received_at": "2026-12-02T10:00:00.000000Z", "published_at": "2026-12-02T10:00:00.000000Z",
                      "is_test": False, "document": corpus[i % len(corpus)]}] for i in range(args.requests)]
            svc.accept(reqs[0], "gong_calls", credential="bearer:0123abcd")
            cpu, srv = time.process_time(), server_cpu(client)
            for events in reqs[1:]:
                svc.accept(events, "gong_calls", credential="bearer:0123abcd")
            n = len(reqs) - 1
            results[mode]["web_client"].append((time.process_time() - cpu) / n * 1e6)
            results[mode]["web_server"].append((server_cpu(client) - srv) / n * 1e6)
            client.flushall()
    print(f"us of CPU per event, median of {args.rounds} rounds each way (alternating):")
    for part in ("web_client", "web_server", "worker_client", "worker_server"):
        on, off = statistics.median(results["on"][part]), statistics.median(results["off"][part])
        print(f"  {part:<14} on {on:7.1f}  off {off:7.1f}  trace {on - off:+6.1f}   "
              f"(on {', '.join(f'{v:.0f}' for v in results['on'][part])}; "
              f"off {', '.join(f'{v:.0f}' for v in results['off'][part])})")


if __name__ == "__main__":
    main()
