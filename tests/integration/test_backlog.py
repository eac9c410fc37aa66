"""The backlog metrics tell the truth during an outage: with the PostgreSQL table locked, the bytes and
documents waiting for postgres grow with what arrives, and go back to zero once the lock goes and the
backlog drains. (On a Redis broker the messages carry claim checks of a few hundred bytes: measuring
messages had said "nothing waits".)"""
from __future__ import annotations

import json
import threading
from typing import Any

import psycopg2
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import READ_TOKEN, TOKEN, Harness, gong_call

EVENTS = 2000
PER_REQUEST = 100


def backlog(h: Harness, target: str = "postgres") -> tuple[float, float]:
    """(documents, bytes) waiting for ``target``, as /metrics reports them."""
    resp = requests.get(h.url + "/metrics", timeout=15, headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert resp.status_code == 200, resp.text
    got: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            if s.name in ("sophia_materialization_lag_documents", "estuary_materialization_lag_bytes") \
                    and s.labels.get("target") == target:
                got[s.name] = s.value
    return got["sophia_materialization_lag_documents"], got["estuary_materialization_lag_bytes"]


def send(h: Harness, calls: list[dict[str, Any]]) -> None:
    session = requests.Session()
    for i in range(0, len(calls), PER_REQUEST):
        body = json.dumps([{"type": "call_completed", "data": c} for c in calls[i:i + PER_REQUEST]])
        r = session.post(h.url + "/estuary/webhook", data=body, timeout=30,
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        assert r.status_code == 202, r.text



def test_a_locked_postgres_table_shows_in_both_backlog_figures_until_it_drains(harness: Harness) -> None:
    # The table exists and nothing waits for postgres before the outage starts.
    warm = gong_call()
    assert harness.post({"type": "call_completed", "data": warm}).status_code == 202
    harness.wait(lambda: harness.pg_rows(warm["metaData"]["id"]), 30, "the table to exist")
    harness.wait(lambda: backlog(harness) == (0, 0), 60, "no postgres backlog before the lock")

    calls = [gong_call() for _ in range(EVENTS)]
    ids = [c["metaData"]["id"] for c in calls]
    locker = psycopg2.connect(harness.env["SOPHIA_POSTGRES_DSN"])
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE gong_calls_enriched IN ACCESS EXCLUSIVE MODE")
            send(harness, calls[:EVENTS // 2])
            first = harness.wait(lambda: (lambda b: b if b[0] >= EVENTS // 4 else None)(backlog(harness)), 60,
                                 "the first half waiting for postgres")
            sender = threading.Thread(target=send, args=(harness, calls[EVENTS // 2:]))
            sender.start()
            sender.join(120)
            assert not sender.is_alive()
            second = harness.wait(lambda: (lambda b: b if b[0] >= EVENTS * 0.9 else None)(backlog(harness)), 60,
                                  "nearly every event waiting for postgres")
            # Both figures grow with the backlog, and the bytes are the documents' (KBs each), not the
            # claim checks' few hundred bytes per batch.
            assert second[0] > first[0] and second[1] > first[1]
            assert second[1] >= second[0] * 1000, second
        locker.rollback()
    finally:
        locker.close()
    harness.wait(lambda: backlog(harness) == (0, 0), 120, "the postgres backlog to drain to zero")
    assert harness.pg_count(ids) == EVENTS
