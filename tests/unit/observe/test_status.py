"""`status`: quantiles from the lag histogram, per-target sums, and the table when piped."""
from __future__ import annotations

import io
from typing import Any

import pytest

from sophia_tasks.observe.counts import diff_counters, lag_quantiles, quantile, target_counts
from sophia_tasks.observe.status import render_status


def test_quantile_interpolates_inside_a_bucket() -> None:
    buckets = [(0.5, 0.0), (1.0, 50.0), (2.0, 100.0)]
    assert quantile(buckets, 100, 0.5) == 1.0
    assert quantile(buckets, 100, 0.25) == 0.75
    assert quantile(buckets, 100, 0.99) == pytest.approx(1.98)
    assert quantile(buckets, 0, 0.5) is None
    # Beyond the last bound: the last bound (what Prometheus answers).
    assert quantile([(1.0, 1.0), (2.0, 1.0)], 5, 0.99) == 2.0


def test_target_counts_sum_collections_and_reasons() -> None:
    counters = {
        "documents_written|collection=a|target=pg": 3.0, "documents_written|collection=b|target=pg": 4.0,
        "errors|reason=data|stage=materialize|target=pg": 1.0,
        "errors|reason=unreachable|stage=materialize|target=pg": 2.0,
        "errors|reason=schema|stage=validate|target=": 9.0,  # not a target's
        "lag_seconds_bucket|le=0.5|target=pg": 6.0, "lag_seconds_bucket|le=1.0|target=pg": 7.0,
        "lag_seconds_count|target=pg": 7.0, "lag_seconds_sum|target=pg": 2.1,
    }
    pg = target_counts(counters)["pg"]
    assert pg["written"] == 7 and pg["errors"] == 3 and pg["errors_by_reason"] == {"data": 1, "unreachable": 2}
    assert set(target_counts(counters)) == {"pg"}
    p50, p99 = lag_quantiles(pg)
    assert p50 is not None and p50 <= 0.5 and p99 is not None and 0.5 < p99 <= 1.0
    assert diff_counters({"x": 5.0, "y": 1.0}, {"x": 2.0}) == {"x": 3.0, "y": 1.0}


def _report() -> dict[str, Any]:
    target = {"target": "snowflake", "endpoint": "snowflake", "collections": ["gong_calls_enriched"],
              "written": 1234, "batches": 56, "stale_skipped": 0, "errors": 7,
              "errors_by_reason": {"unreachable": 7}, "lag_p50_s": 0.42, "lag_p99_s": 3.5, "lag_mean_s": 0.9,
              "lag_p99_window_s": 12.0, "queue": "sophia.materialize.snowflake",
              "queue_bulk": "sophia.backfill.materialize.snowflake", "waiting": 3, "waiting_bytes": 123456,
              "waiting_documents": 4321, "dead_letters": 2, "last_written": "2026-11-25T10:00:00+00:00",
              "last_written_age_s": 42.0}
    return {
        "flow": "/srv/sophia/flows/a-rather-long-path/default.yaml",
        "flows": [{"name": "gong_calls", "type": "collection", "reads_from": [], "writes_to": ["gong_calls"],
                   "accepted": 10, "validated": 9, "test_deliveries": 1, "dead_letters": 1},
                  {"name": "gong_calls_enriched", "type": "derivation", "reads_from": ["gong_calls"],
                   "writes_to": ["gong_calls_enriched"], "derived": 9, "dead_letters": 0},
                  {"name": "snowflake", "type": "materialization", "reads_from": ["gong_calls_enriched"],
                   "writes_to": ["snowflake:GONG_CALLS_ENRICHED"], "written": 1234, "errors": 7, "lag_p99_s": 3.5}],
        "targets": [target],
        "queues": {"sophia.backfill.materialize.snowflake": 1},
        "queues_detail": [{"queue": "sophia.backfill.materialize.snowflake", "target": "snowflake", "lane": "bulk",
                           "ready": 1, "reserved": 2, "bytes": 2048}],
        "dead_letters": 3, "dead_letters_by_stage": {"materialize": 2, "validate": 1},
        "throughput": {"capture": 1.5, "validate": 1.5, "derive": 1.5, "materialize": 4.5},
        "window_seconds": 300, "alerts_firing": [{"kind": "lag", "target": "snowflake"}], "errors": [],
    }


def test_render_status_is_wide_and_complete_when_piped() -> None:
    out = io.StringIO()  # not a terminal
    render_status(_report(), out)
    text = out.getvalue()
    assert "…" not in text
    for needle in ("flows in /srv/sophia/flows/a-rather-long-path/default.yaml", "accepted 10, validated 9",
                   "sophia.backfill.materialize.snowflake", "7 (unreachable 7)", "420 ms", "3.5 s", "12.0 s",
                   "120.6 KiB", "4321", "waiting docs", "42.0 s ago", "lag p99 5.0 min", "materialize 4.5/s",
                   "dead letters pending: 3 (materialize 2, validate 1)", "alerts firing: lag on snowflake"):
        assert needle in text, needle
    assert "\x1b[" not in text  # no colour codes in a pipe


def test_render_status_lists_paused_bindings_with_their_reason() -> None:
    report = _report()
    report["paused"] = [{"target": "snowflake", "collection": "gong_calls_enriched", "since": "x", "paused_s": 125.0,
                         "reason": "snowflake table T does not match the flow spec (column X (VARCHAR) is missing)"}]
    out = io.StringIO()
    render_status(report, out)
    text = out.getvalue()
    assert "paused bindings: 1 (documents held until `sophia-tasks flows apply`)" in text
    assert "PAUSED snowflake <- gong_calls_enriched for 2.1 min: snowflake table T" in text
    quiet = io.StringIO()
    render_status(_report(), quiet)
    assert "paused bindings: none" in quiet.getvalue()
