"""Counter arithmetic shared by ``status``, ``/metrics`` and the alerts: per-target sums,
window differences and histogram quantiles."""
from __future__ import annotations

from typing import Any, Mapping

import psycopg2

from sophia_tasks.observe.stats import LAG_BUCKETS, parse_field
from sophia_tasks.settings import Settings
from sophia_tasks.store.db import connections


def quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """Prometheus-style histogram_quantile over cumulative buckets (linear inside a bucket).

    Observations above the last bound answer the last bound, as Prometheus does.
    """
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


def target_counts(counters: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Per target: written, batches, stale, errors (total and by stage/reason) and lag histogram."""
    out: dict[str, dict[str, Any]] = {}

    def slot(target: str) -> dict[str, Any]:
        if target not in out:
            out[target] = empty_counts()
        return out[target]

    for raw, value in counters.items():
        name, labels = parse_field(raw)
        target = labels.get("target")
        if not target:
            continue
        if name == "documents_written":
            slot(target)["written"] += value
        elif name == "batches_written":
            slot(target)["batches"] += value
        elif name == "documents_stale":
            slot(target)["stale"] += value
        elif name == "errors":
            t = slot(target)
            reason = labels.get("reason", "")
            if reason != "paused":  # held for `flows apply`, not a failed write: the paused alert covers it
                t["errors"] += value
            t["errors_by_reason"][reason] = t["errors_by_reason"].get(reason, 0.0) + value
        elif name == "lag_seconds_bucket":
            try:
                le = float(labels.get("le", ""))
            except ValueError:
                continue
            b = slot(target)["lag_buckets"]
            b[le] = b.get(le, 0.0) + value
        elif name == "lag_seconds_count":
            slot(target)["lag_count"] += value
        elif name == "lag_seconds_sum":
            slot(target)["lag_sum"] += value
    return out


def empty_counts() -> dict[str, Any]:
    return {"written": 0.0, "batches": 0.0, "stale": 0.0, "errors": 0.0, "errors_by_reason": {},
            "lag_buckets": {}, "lag_count": 0.0, "lag_sum": 0.0}


def diff_counters(current: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """current - baseline per field (a field missing from the baseline counts from zero)."""
    return {k: v - baseline.get(k, 0.0) for k, v in current.items()}


def lag_quantiles(counts: Mapping[str, Any]) -> tuple[float | None, float | None]:
    buckets = [(le, counts["lag_buckets"].get(le, 0.0)) for le in LAG_BUCKETS]
    return quantile(buckets, counts["lag_count"], 0.5), quantile(buckets, counts["lag_count"], 0.99)


def pending_dead_letters(settings: Settings) -> dict[tuple[str, str], int]:
    """(stage, target or '') -> pending letters, one GROUP BY on the dead-letter table.

    Tried twice: a kept connection the server closed while idle (a restart, pg_terminate_backend) is
    discarded by the first failure, and a read is safe to repeat."""
    for attempt in (1, 2):
        try:
            with connections.transaction(settings.postgres_dsn) as cur:
                cur.execute("SELECT stage, coalesce(target, ''), count(*) FROM sophia_dead_letters "
                            "WHERE status = 'pending' GROUP BY 1, 2")
                return {(str(stage), str(target)): int(n) for stage, target, n in cur.fetchall()}
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
