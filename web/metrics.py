"""Prometheus exposition built from the shared counters in Redis.

Every process counts into Redis (``sophia_tasks.observe.stats``), so whichever web
worker answers /metrics reports the sum over all web and Celery processes; this
was chosen over prometheus_client's multiprocess mode, which only sees the
processes of one host sharing one directory.

Series that an alert or a dashboard divides by (errors, documents written) are
exported at zero from the start for every target, so ``rate()`` has a series
to work on before the first error. When a source cannot be read (Redis, the
broker, the dead-letter store) its families are left out rather than reported
as zeros, and ``sophia_metrics_source_up{source}`` says which one failed.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any, Iterator

import redis as redis_lib
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sophia_tasks.observe.stats import LAG_BUCKETS, STAGES, Stats, parse_field

log = logging.getLogger(__name__)

# Error reasons each stage records (``pipeline.records.record_error`` callers), exported at zero until seen.
KNOWN_ERRORS: tuple[tuple[str, str], ...] = (("materialize", "data"), ("materialize", "unreachable"),
                                             ("materialize", "exception"), ("materialize", "expired"),
                                             ("materialize", "paused"))
STAGE_ERRORS: tuple[tuple[str, str], ...] = (("validate", "schema"), ("validate", "exception"),
                                             ("derive", "transform"), ("derive", "exception"))
# Counters per collection that the stages keep: stats name -> (metric name, help).
COLLECTION_COUNTERS: dict[str, tuple[str, str]] = {
    "events_accepted": ("sophia_events_accepted", "Events accepted by the webhook or a backfill"),
    "documents_validated": ("sophia_documents_validated", "Documents that passed schema validation"),
    "documents_derived": ("sophia_documents_derived", "Documents handed to materialization by derive"),
    "test_deliveries": ("sophia_test_deliveries", "isTest deliveries acknowledged, not materialized"),
}
# sophia.reconcile: calls found at Gong and not here ("missing") or newer there ("newer"), enqueued or
# only reported (a dry run); exported at zero so the reconcile rule's increase() has a series.
RECONCILE_OUTCOMES = ("missing", "newer")
RECONCILE_MODES = ("enqueued", "dry_run")
TARGET_COUNTERS: dict[str, tuple[str, str]] = {
    "documents_written": ("sophia_documents_written", "Documents written per target"),
    "batches_written": ("sophia_batches_written", "Batches written per target"),
    "documents_stale": ("sophia_documents_stale",
                        "Documents skipped because a newer version was already there"),
}

_stats: dict[tuple[int, str], Stats] = {}
_stats_lock = threading.Lock()


def _stats_for(url: str) -> Stats:
    """One client per process and URL: a scrape should not open a connection pool each time.

    Under a lock: the web's threads scrape at once, and a client dropped by one thread while
    another uses it would close that thread's connection when it is garbage-collected.
    """
    key = (os.getpid(), url)
    stats = _stats.get(key)
    if stats is None:
        with _stats_lock:
            stats = _stats.get(key)
            if stats is None:
                for old in [k for k in _stats if k[0] != key[0]]:  # a forked parent's clients
                    del _stats[old]
                stats = _stats[key] = Stats(url)
    return stats


def _le_key(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


class SophiaCollector:
    """Reads Redis, the broker and the dead-letter store at scrape time."""

    def __init__(self, services: Any) -> None:
        self.svc = services

    def collect(self) -> Iterator[Metric]:
        settings = self.svc.settings
        spec = self.svc.spec
        targets = list(spec.materializations)
        up = GaugeMetricFamily("sophia_metrics_source_up",
                               "1 when /metrics could read the source (stats, broker, deadletters)",
                               labels=["source"])
        stats = _stats_for(settings.redis_url)
        try:
            counters = stats.counters()
            throughput = stats.throughput_all()
            gauges = stats.gauges()
            up.add_metric(["stats"], 1.0)
        except (redis_lib.RedisError, OSError) as exc:
            log.warning("metrics: stats unavailable: %s", exc)
            counters, throughput, gauges = None, None, None
            up.add_metric(["stats"], 0.0)
        if counters is not None:
            yield from self._counter_families(counters, spec, targets)
        if throughput is not None:
            eps = GaugeMetricFamily("estuary_flow_throughput_eps",
                                    "Events per second per stage over the last 60 s (sliding window)",
                                    labels=["stage"])
            for stage in STAGES:
                eps.add_metric([stage], throughput.get(stage, 0.0))
            yield eps
        if gauges is not None:
            last = GaugeMetricFamily("sophia_last_written_timestamp_seconds",
                                     "Unix time of the last successful write per target (staleness)",
                                     labels=["target"])
            for raw, value in sorted(gauges.items()):
                name, labels = parse_field(raw)
                if name == "last_written" and labels.get("target"):
                    last.add_metric([labels["target"]], value)
            yield last
            yield from self._alert_families(stats)
            yield from self._worker_families(stats, settings)

        yield from self._broker_families(settings, spec, targets, up)
        yield from self._dead_letter_families(settings, up)
        yield up

    # -- counters ------------------------------------------------------------------------
    def _counter_families(self, counters: dict[str, float], spec: Any, targets: list[str]) -> Iterator[Metric]:
        lag = HistogramMetricFamily("estuary_flow_lag_seconds",
                                    "Seconds from webhook receipt to materialized, per target", labels=["target"])
        errors = CounterMetricFamily("estuary_flow_errors", "Errors per stage, target and reason",
                                     labels=["stage", "target", "reason"])
        per_target = {name: CounterMetricFamily(metric, help_, labels=["target", "collection"])
                      for name, (metric, help_) in TARGET_COUNTERS.items()}
        per_collection = {name: CounterMetricFamily(metric, help_, labels=["collection"])
                          for name, (metric, help_) in COLLECTION_COUNTERS.items()}

        error_values: dict[tuple[str, str, str], float] = {}
        for target in targets:
            for stage, reason in KNOWN_ERRORS:
                error_values[(stage, target, reason)] = 0.0
        for stage, reason in STAGE_ERRORS:
            error_values[(stage, "", reason)] = 0.0
        target_values: dict[str, dict[tuple[str, str], float]] = {name: {} for name in TARGET_COUNTERS}
        for name, mat in spec.materializations.items():
            for binding in mat.bindings:
                for values in target_values.values():
                    values[(name, binding.source)] = 0.0
        collection_values: dict[str, dict[str, float]] = {name: {} for name in COLLECTION_COUNTERS}
        for coll in spec.collections:
            for name in ("events_accepted", "documents_validated", "test_deliveries"):
                collection_values[name][coll] = 0.0
        for coll in spec.derivations:
            collection_values["documents_derived"][coll] = 0.0
        reconciled = CounterMetricFamily("sophia_reconciled", "Calls reconciliation with Gong found missing here "
                                         "or newer at Gong", labels=["outcome", "mode"])
        reconciled_values = {(o, m): 0.0 for o in RECONCILE_OUTCOMES for m in RECONCILE_MODES}
        buckets: dict[str, dict[float, float]] = {t: {} for t in targets}
        sums: dict[str, float] = {t: 0.0 for t in targets}
        counts: dict[str, float] = {t: 0.0 for t in targets}

        for raw, value in counters.items():
            name, labels = parse_field(raw)
            target = labels.get("target", "")
            if name == "lag_seconds_bucket":
                le = _le_key(labels.get("le", ""))
                if le is not None:
                    buckets.setdefault(target, {})[le] = buckets.get(target, {}).get(le, 0.0) + value
            elif name == "lag_seconds_sum":
                sums[target] = sums.get(target, 0.0) + value
            elif name == "lag_seconds_count":
                counts[target] = counts.get(target, 0.0) + value
            elif name == "errors":
                key = (labels.get("stage", ""), target, labels.get("reason", ""))
                error_values[key] = error_values.get(key, 0.0) + value
            elif name in TARGET_COUNTERS:
                key2 = (target, labels.get("collection", ""))
                target_values[name][key2] = target_values[name].get(key2, 0.0) + value
            elif name == "reconciled":
                key3 = (labels.get("outcome", ""), labels.get("mode", ""))
                reconciled_values[key3] = reconciled_values.get(key3, 0.0) + value
            elif name in COLLECTION_COUNTERS:
                coll = labels.get("collection", "")
                collection_values[name][coll] = collection_values[name].get(coll, 0.0) + value

        for target in sorted(set(buckets) | set(counts)):
            series = [(_fmt_le(le), buckets.get(target, {}).get(le, 0.0)) for le in LAG_BUCKETS]
            series.append(("+Inf", counts.get(target, 0.0)))
            lag.add_metric([target], series, sums.get(target, 0.0))
        for (stage, target, reason), value in sorted(error_values.items()):
            errors.add_metric([stage, target, reason], value)
        yield lag
        yield errors
        for (outcome, mode), value in sorted(reconciled_values.items()):
            reconciled.add_metric([outcome, mode], value)
        yield reconciled
        for name, family in per_target.items():
            for (target, coll), value in sorted(target_values[name].items()):
                family.add_metric([target, coll], value)
            yield family
        for name, family in per_collection.items():
            for coll, value in sorted(collection_values[name].items()):
                family.add_metric([coll], value)
            yield family

    # -- broker --------------------------------------------------------------------------
    def _broker_families(self, settings: Any, spec: Any, targets: list[str],
                         up: GaugeMetricFamily) -> Iterator[Metric]:
        from sophia_tasks.observe.queues import broker_snapshot

        try:
            snap = broker_snapshot(settings, spec)
            up.add_metric(["broker"], 1.0)
        except Exception as exc:  # kombu, redis and socket errors alike
            log.warning("metrics: broker unavailable: %s", exc)
            up.add_metric(["broker"], 0.0)
            return
        qlen = GaugeMetricFamily("sophia_queue_length", "Messages ready on the broker per queue", labels=["queue"])
        reserved = GaugeMetricFamily("sophia_queue_reserved",
                                     "Messages workers hold per queue: running, prefetched or waiting for a "
                                     "retry countdown (Redis broker only)", labels=["queue"])
        for q in sorted(snap.queues.values(), key=lambda q: q.name):
            qlen.add_metric([q.name], q.ready)
            if q.reserved is not None:
                reserved.add_metric([q.name], q.reserved)
        yield qlen
        yield reserved
        lag_bytes = GaugeMetricFamily("estuary_materialization_lag_bytes",
                                      "Bytes of the documents waiting for each target, both lanes: claim-checked "
                                      "batches (retries included), coalesced buffers and their cuts, plus task "
                                      "messages (NaN where the broker cannot tell, AMQP)", labels=["target"])
        lag_docs = GaugeMetricFamily("sophia_materialization_lag_documents",
                                     "Documents waiting for each target, both lanes: claim-checked batches "
                                     "(retries included), coalesced buffers and their cuts (NaN on AMQP)",
                                     labels=["target"])
        sizes = snap.bytes_by_target()
        docs = snap.documents_by_target()
        for target in targets:
            lag_bytes.add_metric([target], sizes.get(target, 0.0) if snap.measured_bytes else math.nan)
            lag_docs.add_metric([target], docs.get(target, 0.0) if snap.measured_bytes else math.nan)
        yield lag_bytes
        yield lag_docs

    # -- dead letters --------------------------------------------------------------------
    def _dead_letter_families(self, settings: Any, up: GaugeMetricFamily) -> Iterator[Metric]:
        from sophia_tasks.observe.counts import pending_dead_letters

        try:
            by_place = pending_dead_letters(settings)
            up.add_metric(["deadletters"], 1.0)
        except Exception as exc:  # psycopg2 errors: the store is down or not migrated
            log.warning("metrics: dead-letter store unavailable: %s", exc)
            up.add_metric(["deadletters"], 0.0)
            return
        dead = GaugeMetricFamily("sophia_dead_letters", "Dead letters waiting for replay")
        dead.add_metric([], float(sum(by_place.values())))
        yield dead
        detail = GaugeMetricFamily("sophia_dead_letters_pending", "Dead letters waiting for replay per stage and "
                                   "target (target empty for validate and derive)", labels=["stage", "target"])
        for target in self.svc.spec.materializations:
            by_place.setdefault(("materialize", target), 0)
        for (stage, target), n in sorted(by_place.items()):
            detail.add_metric([stage, target], float(n))
        yield detail

    # -- alerts --------------------------------------------------------------------------
    def _worker_families(self, stats: Stats, settings: Any) -> Iterator[Metric]:
        """The worker nodes with a recent heartbeat: the same list `/readyz` and `status` show."""
        from sophia_tasks.observe.workers import read_workers

        try:
            workers = read_workers(stats.client, settings)
        except (redis_lib.RedisError, OSError) as exc:
            log.warning("metrics: worker heartbeats unavailable: %s", exc)
            return
        live = GaugeMetricFamily("sophia_workers_live", "Worker nodes with a heartbeat in the last few seconds")
        live.add_metric([], float(len(workers)))
        yield live
        consumed = GaugeMetricFamily("sophia_worker_consumed_age_seconds",
                                     "Seconds since the node last consumed (finished a task or had a free process)",
                                     labels=["node"])
        for w in workers:
            if w["consumed_age_s"] is not None:
                consumed.add_metric([w["node"]], float(w["consumed_age_s"]))
        yield consumed

    def _alert_families(self, stats: Stats) -> Iterator[Metric]:
        from sophia_tasks.observe.alerts import firing_alerts
        from sophia_tasks.observe.paused import paused_bindings

        firing = GaugeMetricFamily("sophia_alert_firing", "1 for each alert sophia.alerts has sent to Slack and "
                                   "not yet resolved", labels=["alert", "target"])
        try:
            for alert in firing_alerts(stats.client):
                firing.add_metric([alert["kind"], alert["target"]], 1.0)
        except redis_lib.RedisError as exc:
            log.warning("metrics: alert state unavailable: %s", exc)
            return
        yield firing
        paused = GaugeMetricFamily("sophia_binding_paused", "1 for each binding whose table does not match the flow "
                                   "spec: its documents are held until `sophia-tasks flows apply`",
                                   labels=["target", "collection"])
        try:
            for entry in paused_bindings(stats.client):
                paused.add_metric([str(entry.get("target")), str(entry.get("collection"))], 1.0)
        except redis_lib.RedisError as exc:
            log.warning("metrics: paused bindings unavailable: %s", exc)
            return
        yield paused


def _fmt_le(value: float) -> str:
    return repr(float(value))


def render(services: Any) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SophiaCollector(services))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
