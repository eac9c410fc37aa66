"""Names, run sizes and small stack helpers every scenario uses, kept in one leaf module so that
the scenario modules never need to import one another."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Bench

WEBHOOK = "/estuary/webhook"
COUNTERS = "sophia:stats:counters"
TARGETS = ("redis", "postgres", "snowflake")
DERIVED = "gong_calls_enriched"


@dataclass
class Sizes:
    ingest_concurrency: tuple[int, ...]
    ingest_seconds: float
    ingest_warmup: float
    drain_events: int
    naive_events: int
    sf_raw_events: int
    latency_rate: float
    latency_seconds: float
    backfill_events: int
    backfill_rate: float
    batch_body_events: int = 100
    soak_rate: float = 500
    soak_seconds: float = 600
    soak_kill_every: float = 60
    soak_visibility_timeout: int = 30

    @classmethod
    def for_mode(cls, quick: bool) -> "Sizes":
        if quick:
            return cls(ingest_concurrency=(8, 32, 64), ingest_seconds=4, ingest_warmup=1, drain_events=2_000,
                       naive_events=300, sf_raw_events=2_000, latency_rate=500, latency_seconds=10,
                       backfill_events=5_000, backfill_rate=100)
        return cls(ingest_concurrency=(8, 32, 64), ingest_seconds=15, ingest_warmup=3, drain_events=20_000,
                   naive_events=2_000, sf_raw_events=5_000, latency_rate=500, latency_seconds=60,
                   backfill_events=100_000, backfill_rate=100)


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
