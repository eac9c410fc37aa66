"""The web's part of the trace: the dedupe scripts record receipt, source and credential name, and count
duplicates, in the round trip they already make (a real Redis, a scratch database)."""
from __future__ import annotations

import time
import uuid

import redis

from sophia_tasks.flows import load_spec
from sophia_tasks.settings import load_settings
from web.services import Services

URL = "redis://127.0.0.1:6379/12"


def services(**env: str) -> Services:
    settings = load_settings({"SOPHIA_WEBHOOK_TOKENS": "t", "SOPHIA_BROKER_URL": URL, "SOPHIA_REDIS_URL": URL,
                              "SOPHIA_QUEUE_PREFIX": f"unit-{uuid.uuid4().hex[:8]}.", **env})
    return Services(settings, load_spec(settings.flow_path))


def event(event_id: str) -> dict:
    return {"event_id": event_id, "collection": "gong_calls", "received_at": "2026-12-03T08:00:00.000000Z",
            "source": "webhook", "document": {"metaData": {"id": "1"}}}


def test_one_trip_accept_traces_first_deliveries_and_counts_duplicates() -> None:
    svc = services()
    client = redis.Redis.from_url(URL)
    a, b = f"ev-{uuid.uuid4().hex}", f"ev-{uuid.uuid4().hex}"
    try:
        assert svc._one_trip is not None  # broker and cache on one server: the one-trip script
        assert svc.accept([event(a), event(b)], "gong_calls", credential="bearer:0123abcd") == [True, True]
        before = time.time()
        assert svc.accept([event(a)], "gong_calls", credential="bearer:0123abcd") == [False]
        assert svc.accept([event(a)], "gong_calls", credential="bearer:0123abcd") == [False]
        trace = {k.decode(): v.decode() for k, v in client.hgetall(f"sophia:trace:{a}").items()}
        assert trace["received"] == "2026-12-03T08:00:00.000000Z"
        assert trace["source"] == "webhook" and trace["credential"] == "bearer:0123abcd"
        assert trace["duplicates"] == "2" and float(trace["duplicate_at"]) >= before - 1
        assert "duplicates" not in {k.decode() for k in client.hkeys(f"sophia:trace:{b}")}
        assert 0 < client.ttl(f"sophia:trace:{a}") <= svc.settings.dedupe_window_seconds
    finally:
        client.delete(*[f"sophia:{p}:{e}" for p in ("trace", "dedupe") for e in (a, b)], svc.buffer.buffer_key,
                      svc.buffer.since_key)


def test_the_two_trip_dedupe_traces_too_and_tracing_can_be_turned_off() -> None:
    client = redis.Redis.from_url(URL)
    on, off = services(), services(SOPHIA_TRACE="0")
    a, b = f"ev-{uuid.uuid4().hex}", f"ev-{uuid.uuid4().hex}"
    try:
        fresh, _ = on.dedupe_and_count([a], "gong_calls", on._trace_args([event(a)], "read:ffff0000"))
        assert fresh == [True]
        assert client.hget(f"sophia:trace:{a}", "credential") == b"read:ffff0000"
        fresh, _ = off.dedupe_and_count([b], "gong_calls", off._trace_args([event(b)], "bearer:1"))
        assert fresh == [True] and not client.exists(f"sophia:trace:{b}")
        on.release([a])  # the broker refused: the dedupe claim and the trace both go
        assert not client.exists(f"sophia:trace:{a}", f"sophia:dedupe:{a}")
    finally:
        client.delete(*[f"sophia:{p}:{e}" for p in ("trace", "dedupe") for e in (a, b)])
