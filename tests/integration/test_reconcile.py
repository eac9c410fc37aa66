"""Reconciliation with Gong against the fake Gong API: some webhooks dropped on purpose, one call
delivered with an older version than Gong's; reconcile finds exactly those, enqueues them, they
reach every target, and a second run finds nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from sophia_tasks.flows import load_spec
from sophia_tasks.observe.alerts import PENDING_KEY, SNAPSHOTS_KEY, STATE_KEY, run_checks
from sophia_tasks.ops.backfill import CheckpointStore, gong_client
from sophia_tasks.ops.reconcile import checkpoint_key, run_reconcile
from sophia_tasks.settings import DEFAULT_FLOW, load_settings
from tests.integration.conftest import Harness, gong_call
from tests.integration.fake_gong import FakeGong
from tests.integration.test_backfill import pg_ids, redis_ids, sf_ids


def _title(h: Harness, call_id: str) -> str | None:
    rows = h.pg_rows(call_id)
    return rows[0][3] if rows else None


def _reconcile_alert_only(tmp_path: Path) -> Path:
    """The shipped spec with every alert off but reconciliation's: more than 2 repairs pages at once."""
    data = yaml.safe_load(DEFAULT_FLOW.read_text(encoding="utf-8"))
    data["alerts"] = {"defaults": {"error_rate": "off", "lag_p99": "off", "dead_letters": "off", "stale_after": "off"},
                      "pipeline": {"dead_letters": "off"}, "reconcile": {"repaired": 2, "window": "1h"}}
    for collection in data["collections"].values():  # the copy lives elsewhere: its schema files by full path
        if isinstance(collection.get("schema"), str) and collection["schema"].endswith(".json"):
            collection["schema"] = str(DEFAULT_FLOW.parent / collection["schema"])
    path = tmp_path / "flow-reconcile-alert.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_reconcile_finds_the_dropped_and_the_newer_calls_enqueues_them_and_then_finds_nothing(
        harness: Harness, tmp_path: Path) -> None:
    calls = [gong_call() for _ in range(6)]
    ids = [c["metaData"]["id"] for c in calls]
    delivered, newer, dropped = calls[:3], calls[3], calls[4:]
    # Delivered by the webhook: three as they are, one with an old event time and an old title.
    assert harness.post([{"type": "call_completed", "data": c} for c in delivered]).status_code == 202
    old = dict(newer, metaData=dict(newer["metaData"], title="Old title"))
    assert harness.post({"type": "call_completed", "occurred_at": "2026-11-01T00:00:00Z",
                         "data": old}).status_code == 202
    harness.wait(lambda: len(pg_ids(harness, set(ids[:4]))) == 4, 30, "the delivered calls in postgres")
    assert _title(harness, ids[3]) == "Old title"

    gong_newer = dict(newer, metaData=dict(newer["metaData"], title="Title at Gong"))
    pages: list[list[dict[str, Any]]] = [delivered, [gong_newer, *dropped]]
    with FakeGong(pages=pages) as fake:
        env = dict(harness.env, SOPHIA_GONG_API_URL=fake.url, SOPHIA_GONG_ACCESS_KEY=fake.access_key,
                   SOPHIA_GONG_ACCESS_KEY_SECRET=fake.access_key_secret)
        settings = load_settings(env)
        with CheckpointStore(settings.postgres_dsn) as store:  # a clean checkpoint for this fake's URL
            with store.conn.cursor() as cur:
                cur.execute("DELETE FROM sophia_backfill_checkpoints WHERE key = %s",
                            (checkpoint_key(gong_client(settings)),))
        missing_before = harness.counter("reconciled", outcome="missing", mode="enqueued")
        alert_settings = settings.with_overrides(flow_path=_reconcile_alert_only(tmp_path))
        alert_spec = load_spec(alert_settings.flow_path)
        harness.cache.delete(STATE_KEY, SNAPSHOTS_KEY, PENDING_KEY)
        assert run_checks(alert_settings, alert_spec)["fired"] == []  # the snapshot before the repairs

        # By hand, dry run: exactly the dropped calls and the newer one, nothing enqueued.
        exe = str(Path(sys.executable).parent / "sophia-tasks")
        out = subprocess.run([exe, "reconcile", "--since", "2026-11-01", "--dry-run", "--json"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        found = {c["call_id"]: c["outcome"] for c in report["calls"]}
        assert found == {ids[3]: "newer", ids[4]: "missing", ids[5]: "missing"}, report
        assert report["listed"] == 6 and report["enqueued"] == 0 and report["pages"] == 2
        assert fake.requests[0].body["filter"]["fromDateTime"] == "2026-11-01T00:00:00Z"
        assert not redis_ids(harness, set(ids[4:]))

        # The beat job's run (from its checkpoint): enqueues them on the bulk lane; they reach every target.
        first = run_reconcile(settings)
        assert {f.key: f.outcome for f in first.found} == found and first.enqueued == 3
        harness.wait(lambda: len(pg_ids(harness, set(ids))) == 6 and len(redis_ids(harness, set(ids))) == 6,
                     60, "the reconciled calls in postgres and redis")
        harness.wait(lambda: set(sf_ids(harness, set(ids))) == set(ids), 60, "every call in snowflake")
        harness.wait(lambda: _title(harness, ids[3]) == "Title at Gong", 30, "Gong's newer version")
        assert harness.redis_doc(ids[3])["metaData"]["title"] == "Title at Gong"
        assert harness.counter("reconciled", outcome="missing", mode="enqueued") == missing_before + 2
        # Three repairs (more than 2) within the hour: the Slack alert fires at once (its `for` is 0).
        alerted = run_checks(alert_settings, alert_spec)
        assert alerted["fired"] == ["reconcile:gong"], alerted
        assert "enqueued 3 call(s)" in alerted["checks"][0]["detail"]
        harness.cache.delete(STATE_KEY, SNAPSHOTS_KEY, PENDING_KEY)

        second = run_reconcile(settings)
        assert second.found == [] and second.enqueued == 0 and second.listed == 6
        assert second.since < first.until  # from the checkpoint, overlapping (fixed-width UTC versions)

    metrics = harness.read("/metrics").text
    assert 'sophia_reconciled_total{mode="enqueued",outcome="missing"}' in metrics
