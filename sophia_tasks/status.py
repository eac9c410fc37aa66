"""What `sophia-tasks status` reports: per target lag, throughput, errors, backlog."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sophia_tasks.flowspec import FlowSpec
from sophia_tasks.pipeline import LAG_BUCKETS
from sophia_tasks.settings import Settings
from sophia_tasks.stats import GAUGES, Stats, field, parse_field


def quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """Prometheus-style histogram_quantile over cumulative buckets (linear inside a bucket)."""
    if count <= 0:
        return None
    rank = q * count
    prev_le, prev_count = 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if cum == prev_count:
                return le
            return round(prev_le + (le - prev_le) * (rank - prev_count) / (cum - prev_count), 3)
        prev_le, prev_count = le, cum
    return buckets[-1][0] if buckets else None


def collect_status(settings: Settings, spec: FlowSpec) -> dict[str, Any]:
    from sophia_tasks.deadletter import DeadLetterStore
    from sophia_tasks.queues import queue_stats
    from sophia_tasks.celery_app import materialize_queue

    stats = Stats(settings.redis_url)
    counters = stats.counters()
    gauges = {k.decode(): float(v) for k, v in stats.client.hgetall(GAUGES).items()}
    try:
        lengths, sizes = queue_stats(settings, spec)
    except Exception:
        lengths, sizes = {}, {}
    per: dict[str, dict[str, Any]] = {}
    for name, mat in spec.materializations.items():
        per[name] = {"target": name, "endpoint": mat.endpoint, "written": 0, "batches": 0, "errors": 0,
                     "stale_skipped": 0, "queue": materialize_queue(settings, name),
                     "waiting": int(lengths.get(materialize_queue(settings, name), 0)),
                     "waiting_bytes": int(sizes.get(name, 0)), "_buckets": {}, "_count": 0.0}
    for raw, value in counters.items():
        name, labels = parse_field(raw)
        t = per.get(labels.get("target", ""))
        if t is None:
            continue
        if name == "documents_written":
            t["written"] += int(value)
        elif name == "batches_written":
            t["batches"] += int(value)
        elif name == "documents_stale":
            t["stale_skipped"] += int(value)
        elif name == "errors":
            t["errors"] += int(value)
        elif name == "lag_seconds_bucket":
            t["_buckets"][float(labels["le"])] = value
        elif name == "lag_seconds_count":
            t["_count"] = value
    for name, t in per.items():
        buckets = [(le, t["_buckets"].get(le, 0.0)) for le in LAG_BUCKETS]
        t["lag_p50_s"] = quantile(buckets, t["_count"], 0.5)
        t["lag_p99_s"] = quantile(buckets, t["_count"], 0.99)
        last = gauges.get(field("last_written", {"target": name}))
        t["last_written"] = datetime.fromtimestamp(last, timezone.utc).isoformat(timespec="seconds") if last else None
        del t["_buckets"], t["_count"]
    try:
        dead = DeadLetterStore(settings.postgres_dsn).count("pending")
    except Exception:
        dead = None
    return {"flow": str(spec.path), "targets": list(per.values()), "queues": lengths,
            "dead_letters": dead, "throughput": stats.throughput_all()}
