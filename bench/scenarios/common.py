"""Names, run sizes and small stack helpers every scenario uses, kept in one leaf module so that
the scenario modules never need to import one another."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BENCH_BACKENDS, Bench

WEBHOOK = "/estuary/webhook"
COUNTERS = "sophia:stats:counters"
TARGETS = ("redis", "postgres", "snowflake")
DERIVED = "gong_calls_enriched"


#: The processes whose CPU counts as ours (issue #19): the web and worker trees and the two services
#: they use. The Snowflake emulator and the load generator are reported beside them, not counted.
OUR_ROLES = ("web", "worker", "postgres", "redis")
OTHER_ROLES = ("snowflake", "bench (load generator)")


@dataclass
class Sizes:
    ingest_seconds: float
    ingest_warmup: float
    drain_events: int
    naive_events: int
    sf_raw_events: int
    latency_rate: float
    latency_seconds: float
    backfill_events: int
    backfill_rate: float
    cpu_rate: float = 350
    cpu_seconds: float = 60
    #: Interleaved rounds (floor, ours, ...) of the ingest and reads comparisons, and their connections.
    rounds: int = 3
    connections: int = 32
    reads_rate: float = 1000
    reads_seconds: float = 30
    reads_round_seconds: float = 10
    reads_documents: int = 2_000
    inproc_events: int = 20_000
    inproc_batch: int = 500
    batch_body_events: int = 100
    soak_rate: float = 500
    soak_seconds: float = 600
    soak_kill_every: float = 60
    soak_visibility_timeout: int = 30

    @classmethod
    def for_mode(cls, quick: bool) -> "Sizes":
        if quick:
            return cls(ingest_seconds=4, ingest_warmup=1, drain_events=2_000, naive_events=300, sf_raw_events=2_000,
                       latency_rate=500, latency_seconds=10, backfill_events=5_000, backfill_rate=100,
                       cpu_seconds=10, reads_seconds=5, reads_round_seconds=3, reads_documents=500,
                       inproc_events=2_000)
        return cls(ingest_seconds=15, ingest_warmup=3, drain_events=20_000, naive_events=2_000, sf_raw_events=5_000,
                   latency_rate=500, latency_seconds=60, backfill_events=100_000, backfill_rate=100)


def cpu_per_event(memory: dict[str, dict[str, float]], events: int) -> dict[str, Any]:
    """CPU milliseconds per event of each process in ``memory`` (``RssSampler.snapshot``), and the
    sum over ``OUR_ROLES``: the figure issue #19 counts. A role that was not measured is absent."""
    per = {role: round(1000 * m["cpu_s"] / events, 3) for role, m in memory.items()
           if events and m.get("cpu_s") is not None}
    backends = per.pop(BENCH_BACKENDS, None)  # a part of "postgres", not another process
    ours = [per[r] for r in OUR_ROLES if r in per]
    return {"per_process_ms": per, "ours_ms": round(sum(ours), 3) if ours and events else None,
            "counted": [r for r in OUR_ROLES if r in per], "not_counted": [r for r in per if r not in OUR_ROLES],
            "postgres_bench_backends_ms": backends}


def enriched_rows(calls: Any, n: int) -> tuple[list[dict[str, Any]], Any]:
    """The documents the Snowflake binding would write, made by the project's own stage functions."""
    from sophia_tasks.flows import load_spec
    from sophia_tasks.pipeline import stages as pipeline
    from sophia_tasks.settings import load_settings

    spec = load_spec(load_settings().flow_path)
    validated = pipeline.validate_events(spec, calls.events(n)).documents["gong_calls"]
    derived = pipeline.derive_documents(spec, "gong_calls", validated).documents[DERIVED]
    return derived, spec


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def worker_name(bench: Bench) -> str:
    return [n for n in bench.stack.processes if n.startswith("worker-")][-1]


def headers(bench: Bench) -> dict[str, str]:
    return {"Authorization": f"Bearer {bench.token}", "Content-Type": "application/json"}


def purge_broker(bench: Bench) -> None:
    """Drop queued messages (lists) and unacked bookkeeping; keep kombu's exchange bindings."""
    for key in list(bench.broker.scan_iter(count=1000)):
        k = key.decode(errors="replace")
        if k.startswith("_kombu.binding"):
            continue
        # sophia:queued:* is the broker guard's record of published messages: purged with them, or its
        # sweep would put the purged messages back as lost deliveries.
        # The ingest buffer's bookkeeping (arrival stamp, pending cuts) goes with its events.
        if bench.broker.type(key) == b"list" or k.startswith(("unacked", "sophia:queued", "sophia:ingest-buffer",
                                                                "sophia:events", "sophia:batch")):
            bench.broker.delete(key)


def written_fields() -> dict[str, str]:
    from sophia_tasks.observe.stats import field

    return {t: field("documents_written", {"target": t, "collection": DERIVED}) for t in TARGETS}


def counters(bench: Bench) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in bench.cache.hgetall(COUNTERS).items()}


def log_size(bench: Bench) -> int:
    try:
        return bench.stack.processes[worker_name(bench)].log_path.stat().st_size
    except (IndexError, OSError):
        return 0


def task_stats(log_path: Path, offset: int = 0) -> dict[str, Any]:
    """Per task name: how many ran and their summed run time, from the worker's INFO log
    ("Task sophia.x[id] succeeded in 0.12s"). More materialize runs than 3 per derive mean
    retries or bulkhead step-asides (a re-published batch)."""
    import re

    pattern = re.compile(r"Task ([\w.]+)\[[^\]]+\] (succeeded in ([0-9.]+)s|retry|raised)")
    out: dict[str, dict[str, float]] = {}
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return {}
    for m in pattern.finditer(text):
        d = out.setdefault(m.group(1), {"succeeded": 0, "seconds": 0.0, "failed_or_retried": 0})
        if m.group(3):
            d["succeeded"] += 1
            d["seconds"] += float(m.group(3))
        else:
            d["failed_or_retried"] += 1
    for d in out.values():
        d["seconds"] = round(d["seconds"], 2)
    return out
