"""Prometheus exposition built from the shared counters in Redis.

Every process counts into Redis (``sophia_tasks.stats``), so whichever gunicorn
worker answers /metrics reports the sum over all web and Celery processes.
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (CollectorRegistry, CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from sophia_tasks.pipeline import LAG_BUCKETS
from sophia_tasks.stats import Stats, parse_field

log = logging.getLogger(__name__)


def _fmt_le(value: float) -> str:
    return repr(float(value))


class SophiaCollector:
    def __init__(self, services: Any) -> None:
        self.svc = services

    def collect(self) -> Iterator[Any]:
        settings = self.svc.settings
        stats = Stats(settings.redis_url)
        try:
            counters = stats.counters()
            throughput = stats.throughput_all()
        except Exception as exc:
            log.warning("metrics: stats unavailable: %s", exc)
            counters, throughput = {}, {}
        targets = list(self.svc.spec.materializations)

        lag = HistogramMetricFamily("estuary_flow_lag_seconds",
                                    "Seconds from webhook receipt to materialized, per target", labels=["target"])
        errors = CounterMetricFamily("estuary_flow_errors_total", "Errors per stage, target and reason",
                                     labels=["stage", "target", "reason"])
        written = CounterMetricFamily("sophia_documents_written_total", "Documents written per target",
                                      labels=["target", "collection"])
        batches = CounterMetricFamily("sophia_batches_written_total", "Batches written per target",
                                      labels=["target", "collection"])
        stale = CounterMetricFamily("sophia_documents_stale_total",
                                    "Documents skipped because a newer version was already there",
                                    labels=["target", "collection"])
        accepted = CounterMetricFamily("sophia_events_accepted_total", "Events accepted by the webhook",
                                       labels=["collection"])
        buckets: dict[str, dict[str, float]] = {t: {} for t in targets}
        sums: dict[str, float] = {t: 0.0 for t in targets}
        counts: dict[str, float] = {t: 0.0 for t in targets}
        error_seen = False
        for raw, value in counters.items():
            name, labels = parse_field(raw)
            if name == "lag_seconds_bucket":
                buckets.setdefault(labels.get("target", ""), {})[labels.get("le", "")] = value
            elif name == "lag_seconds_sum":
                sums[labels.get("target", "")] = value
            elif name == "lag_seconds_count":
                counts[labels.get("target", "")] = value
            elif name == "errors":
                error_seen = True
                errors.add_metric([labels.get("stage", ""), labels.get("target", ""), labels.get("reason", "")], value)
            elif name == "documents_written":
                written.add_metric([labels.get("target", ""), labels.get("collection", "")], value)
            elif name == "batches_written":
                batches.add_metric([labels.get("target", ""), labels.get("collection", "")], value)
            elif name == "documents_stale":
                stale.add_metric([labels.get("target", ""), labels.get("collection", "")], value)
            elif name == "events_accepted":
                accepted.add_metric([labels.get("collection", "")], value)
        for target in sorted(set(buckets) | set(counts)):
            series = []
            for le in LAG_BUCKETS:
                series.append((_fmt_le(le), buckets.get(target, {}).get(str(le), 0.0)))
            series.append(("+Inf", counts.get(target, 0.0)))
            lag.add_metric([target], series, sums.get(target, 0.0))
        if not error_seen:
            for target in targets:
                errors.add_metric(["materialize", target, "none"], 0.0)
        yield lag
        yield errors
        yield written
        yield batches
        yield stale
        yield accepted

        eps = GaugeMetricFamily("estuary_flow_throughput_eps", "Events per second over the last 60 s",
                                labels=["stage"])
        for stage in ("capture", "validate", "derive", "materialize"):
            eps.add_metric([stage], throughput.get(stage, 0.0))
        yield eps

        from sophia_tasks.queues import queue_stats

        try:
            lengths, sizes = queue_stats(settings, self.svc.spec)
        except Exception as exc:
            log.warning("metrics: broker unavailable: %s", exc)
            lengths, sizes = {}, {}
        qlen = GaugeMetricFamily("sophia_queue_length", "Messages waiting per queue", labels=["queue"])
        for q, n in sorted(lengths.items()):
            qlen.add_metric([q], n)
        yield qlen
        lag_bytes = GaugeMetricFamily("estuary_materialization_lag_bytes",
                                      "Bytes of documents waiting for each target", labels=["target"])
        for target in targets:
            lag_bytes.add_metric([target], sizes.get(target, 0.0))
        yield lag_bytes

        dead = GaugeMetricFamily("sophia_dead_letters", "Dead letters waiting for replay")
        try:
            from sophia_tasks.deadletter import DeadLetterStore

            dead.add_metric([], DeadLetterStore(settings.postgres_dsn).count("pending"))
        except Exception as exc:
            log.warning("metrics: dead-letter store unavailable: %s", exc)
            dead.add_metric([], float("nan"))
        yield dead


def render(services: Any) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SophiaCollector(services))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
