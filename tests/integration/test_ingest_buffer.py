"""The ingest buffer on the real broker Redis: cut rules, and the pipeline through it end to end."""
from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest
import redis

from sophia_tasks.ingest.buffer import REF_KEY, IngestBuffer
from tests.integration.conftest import Harness, gong_call
from tests.integration.test_pipeline import envelope, landed_everywhere


@pytest.fixture
def broker(harness: Harness) -> redis.Redis:
    return redis.Redis.from_url(harness.env["SOPHIA_BROKER_URL"])


@pytest.fixture
def buf(broker: redis.Redis) -> Any:
    """A buffer on a queue name no worker serves, so only the test cuts it."""
    b = IngestBuffer(broker, f"test-{uuid.uuid4().hex[:8]}.ingest", ttl_seconds=600)
    yield b
    keys = list(broker.scan_iter(f"*{b.queue}*"))
    if keys:
        broker.delete(*keys)


def cut(b: IngestBuffer, size: int = 500, flush: float = 0.05, max_wait: float = 1.0,
        validate_queue: str = "test-validate", backlog: int = 8) -> dict[str, Any] | None:
    return b.cut(size, flush, max_wait, validate_queue, backlog)


def events(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"event_id": f"e{start + i}", "collection": "gong_calls", "document": {"i": start + i}} for i in range(n)]


def test_nothing_is_cut_before_the_flush_age(buf: IngestBuffer) -> None:
    assert cut(buf) is None  # empty
    buf.append(events(3))
    assert cut(buf, flush=5.0) is None
    assert buf.length() == 3


def test_a_due_buffer_is_cut_whole_in_order(buf: IngestBuffer) -> None:
    buf.append(events(3))
    buf.append(events(2, start=3))
    time.sleep(0.06)
    ref = cut(buf)
    assert ref is not None and ref["n"] == 5 and ref["age_ms"] >= 50
    assert [e["event_id"] for e in buf.load(ref)] == ["e0", "e1", "e2", "e3", "e4"]
    assert buf.length() == 0
    assert cut(buf, flush=0) is None


def test_a_full_batch_is_cut_at_once_and_no_bigger_than_the_batch_size(buf: IngestBuffer) -> None:
    buf.append(events(1200))  # one request of many events: appended in chunks inside the script
    first = cut(buf, size=500, flush=60)
    second = cut(buf, size=500, flush=60)
    assert first and second and first["n"] == 500 and second["n"] == 500
    assert cut(buf, size=500, flush=60) is None  # 200 left, younger than the flush age
    assert buf.length() == 200
    got = buf.load(first) + buf.load(second)
    assert [e["document"]["i"] for e in got] == list(range(1000))


def test_the_stamp_is_the_first_arrival_into_an_empty_buffer_and_goes_with_it(buf: IngestBuffer,
                                                                              broker: redis.Redis) -> None:
    assert buf.append(events(2)) == 2
    first = broker.get(buf.since_key)
    assert first is not None and abs(int(first) / 1000 - time.time()) < 5  # Redis' clock, ms
    broker.set(buf.since_key, 1_000)  # an old arrival: a later append must not move it
    assert buf.append(events(3, start=2)) == 5
    assert int(broker.get(buf.since_key)) == 1_000
    ref = cut(buf, flush=60)  # due by age: the whole buffer is the cut
    assert ref is not None and ref["n"] == 5
    # A whole cut takes the list itself: no buffer and no stamp are left behind, and the cut expires.
    assert not broker.exists(buf.buffer_key) and not broker.exists(buf.since_key)
    assert 0 < broker.ttl(ref[REF_KEY]) <= 600
    assert [e["event_id"] for e in buf.load(ref)] == [f"e{i}" for i in range(5)]
    buf.append(events(1, start=5))  # a new first arrival
    assert broker.exists(buf.since_key) and int(broker.get(buf.since_key)) > 1_000
    assert buf.append([]) == 1  # nothing to add: the length, and nothing else changes


def test_a_whole_cut_never_replaces_a_list_of_the_same_name(buf: IngestBuffer, broker: redis.Redis) -> None:
    buf.append(events(2))
    ref = cut(buf, flush=0)
    assert ref is not None
    broker.delete(buf.seq_key)  # the sequence starts again while that cut still waits
    buf.append(events(3, start=2))
    again = cut(buf, flush=0)
    assert again is not None and again[REF_KEY] == ref[REF_KEY] and again["n"] == 3
    # Nothing lost: the older cut's events are still there, the newer ones after them.
    assert [e["event_id"] for e in buf.load(ref)] == ["e0", "e1", "e2", "e3", "e4"]


def test_a_partial_cut_keeps_the_rest_and_its_stamp(buf: IngestBuffer, broker: redis.Redis) -> None:
    buf.append(events(7))
    since = broker.get(buf.since_key)
    ref = cut(buf, size=4, flush=60)
    assert ref is not None and ref["n"] == 4
    assert [e["event_id"] for e in buf.load(ref)] == ["e0", "e1", "e2", "e3"]
    assert buf.length() == 3 and broker.get(buf.since_key) == since
    assert 0 < broker.ttl(ref[REF_KEY]) <= 600
    # A stamp lost while events wait (evicted, deleted by hand) comes back with the next arrival:
    # without it the cut would take their age as zero and they would wait for a full batch.
    broker.delete(buf.since_key)
    buf.append(events(1, start=7))
    assert broker.exists(buf.since_key)


def test_a_small_batch_waits_while_validate_is_backlogged_up_to_the_max_wait(buf: IngestBuffer,
                                                                              broker: redis.Redis) -> None:
    validate_queue = f"{buf.queue}.validate"
    broker.lpush(validate_queue, *[b"x"] * 10)
    buf.append(events(5))
    time.sleep(0.06)
    assert cut(buf, validate_queue=validate_queue, backlog=8, max_wait=0.4) is None
    time.sleep(0.4)
    ref = cut(buf, validate_queue=validate_queue, backlog=8, max_wait=0.4)
    assert ref is not None and ref["n"] == 5


def test_release_deletes_the_cut_and_load_then_answers_none(buf: IngestBuffer, broker: redis.Redis) -> None:
    buf.append(events(2))
    ref = cut(buf, flush=0)
    assert ref is not None
    assert broker.zscore(buf.pending_key, ref["$events"]) is not None
    assert 0 < broker.ttl(ref["$events"]) <= 600
    buf.published(ref)
    assert broker.zscore(buf.pending_key, ref["$events"]) is None
    buf.release(ref)
    assert buf.load(ref) is None and not buf.expired(ref)


def test_stale_cuts_are_the_unpublished_ones(buf: IngestBuffer, broker: redis.Redis) -> None:
    buf.append(events(4))
    ref = cut(buf, flush=0)
    assert ref is not None
    assert buf.stale_cuts(older_than=30) == []  # just cut: a publish may be in flight
    broker.zadd(buf.pending_key, {ref["$events"]: time.time() - 60})
    stale = buf.stale_cuts(older_than=30)
    assert [(s["$events"], s["n"]) for s in stale] == [(ref["$events"], 4)]
    buf.release(ref)
    assert buf.stale_cuts(older_than=0) == []


def test_webhook_events_go_through_the_buffer_not_ingest_messages(harness: Harness, broker: redis.Redis) -> None:
    ingest_queue = "sophia.ingest"
    calls = [gong_call() for _ in range(3)]
    for call in calls:
        assert harness.post(envelope(call)).status_code == 202
    for call in calls:
        harness.wait(lambda c=call: landed_everywhere(harness, c["metaData"]["id"]), 30, "the call in every target")
    assert broker.llen(ingest_queue) == 0
    assert broker.llen(f"sophia:ingest-buffer:{ingest_queue}") == 0
    harness.wait(lambda: not list(broker.scan_iter("sophia:events:*")), 10, "every cut released")
    assert broker.zcard(f"sophia:ingest-buffer:{ingest_queue}:cuts") == 0


def test_a_cut_whose_worker_died_before_publishing_is_swept_and_lands(harness: Harness,
                                                                       broker: redis.Redis) -> None:
    """The state a worker killed between cutting and publishing leaves: a cut list, pending, never published."""
    ingest_queue = "sophia.ingest"
    calls = [gong_call() for _ in range(2)]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    key = f"sophia:events:{ingest_queue}:orphan-{uuid.uuid4().hex[:8]}"
    broker.rpush(key, *[orjson.dumps({
        "event_id": f"orphan-{c['metaData']['id']}", "collection": "gong_calls", "received_at": stamp,
        "published_at": stamp, "source": "webhook", "is_test": False, "document": c}) for c in calls])
    broker.zadd(f"sophia:ingest-buffer:{ingest_queue}:cuts", {key: time.time() - 120})
    for call in calls:
        harness.wait(lambda c=call: landed_everywhere(harness, c["metaData"]["id"]), 40, "the swept cut's calls")
    harness.wait(lambda: broker.exists(key) == 0, 10, "the swept cut released")
    assert broker.zscore(f"sophia:ingest-buffer:{ingest_queue}:cuts", key) is None


def test_queue_length_of_the_ingest_queue_counts_the_buffered_events(harness: Harness, broker: redis.Redis) -> None:
    """sophia_queue_length{queue="sophia.ingest"} must show events accepted but not yet cut."""
    from sophia_tasks.flows import load_spec
    from sophia_tasks.observe.queues import broker_snapshot
    from sophia_tasks.settings import load_settings

    settings = load_settings().with_overrides(queue_prefix="qlen-test-")
    spec = load_spec(settings.flow_path)
    b = IngestBuffer(broker, settings.queue("sophia.ingest"), ttl_seconds=60)  # no worker serves this prefix
    try:
        b.append(events(7))
        assert broker_snapshot(settings, spec).lengths()["qlen-test-sophia.ingest"] == 7
    finally:
        broker.delete(b.buffer_key, b.since_key)
