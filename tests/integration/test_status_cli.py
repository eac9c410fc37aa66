"""`sophia-tasks status` with a stack's environment: the numbers match the counters and /metrics."""
from __future__ import annotations

import json

from tests.integration.conftest import Harness, gong_call
from tests.integration.test_metrics import ObsStack, obs, quiesce, scrape, spec_of, total  # noqa: F401 (fixture)


def test_status_json_matches_counters_and_metrics(harness: Harness, obs: ObsStack) -> None:  # noqa: F811
    call = gong_call()
    assert obs.post({"type": "call_completed", "data": call}).status_code == 202
    harness.wait(lambda: obs.targets.sf_rows(call["metaData"]["id"]), 30, "the call in every target")
    quiesce(obs)
    pending_before = len(harness.dead_letters(status="pending"))  # the dead-letter store is the session's
    metrics = scrape(obs)
    out = obs.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    pending_after = len(harness.dead_letters(status="pending"))

    spec = spec_of(obs.settings())
    assert [t["target"] for t in report["targets"]] == list(spec.materializations)
    for t in report["targets"]:
        name = t["target"]
        assert t["written"] == total(metrics, "sophia_documents_written_total", target=name) >= 1
        assert t["written"] == obs.counter("documents_written", target=name, collection="gong_calls_enriched")
        assert t["batches"] == total(metrics, "sophia_batches_written_total", target=name)
        assert t["errors"] == total(metrics, "estuary_flow_errors_total", target=name)
        assert t["lag_p50_s"] is not None and 0 <= t["lag_p50_s"] <= t["lag_p99_s"]
        assert t["waiting"] == 0 and t["waiting_bytes"] == 0
        assert t["last_written_age_s"] is not None and t["last_written_age_s"] < 120
        assert t["queue"] == f"obs.sophia.materialize.{name}"
        assert t["queue_bulk"] == f"obs.sophia.backfill.materialize.{name}"
    low, high = sorted((pending_before, pending_after))
    assert low <= report["dead_letters"] <= high
    flows = {f["name"]: f for f in report["flows"]}
    assert flows["gong_calls"]["type"] == "collection"
    assert flows["gong_calls"]["accepted"] == total(metrics, "sophia_events_accepted_total", collection="gong_calls")
    assert flows["gong_calls_enriched"]["derived"] == total(metrics, "sophia_documents_derived_total",
                                                            collection="gong_calls_enriched")
    assert set(report["queues"]) == {q["queue"] for q in report["queues_detail"]}
    assert all(n == 0 for n in report["queues"].values())
    assert set(report["throughput"]) == {"capture", "validate", "derive", "materialize"}


def test_status_table_is_readable_when_piped(obs: ObsStack) -> None:  # noqa: F811
    out = obs.cli("status")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in ("flows in", "gong_calls_enriched", "targets", "snowflake",
                   "obs.sophia.backfill.materialize.postgres",
                   "lag p99", "dead letters pending:", "throughput (60 s window):", "alerts firing:"):
        assert needle in text, needle
    assert "…" not in text, "a column was cut: the table must be wide enough when not a terminal"
