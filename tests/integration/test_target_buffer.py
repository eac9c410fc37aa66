"""Coalesced targets (``SOPHIA_COALESCE_TARGETS``, Snowflake by default) on the real stack.

Validate appends Snowflake's documents to a target buffer in the broker's Redis; the worker's
batcher cuts it by rows or age into one materialize task per cut.
"""
from __future__ import annotations

import re
import time
import uuid

import orjson
import redis

from sophia_tasks.flows import load_spec
from sophia_tasks.ingest.buffer import BUFFER_PREFIX, coalesces, target_buffer
from sophia_tasks.ingest.events import make_event
from sophia_tasks.pipeline import stages as pipeline
from sophia_tasks.settings import load_settings
from tests.integration.conftest import Harness, gong_call
from tests.integration.test_pipeline import envelope, landed_everywhere

SF_QUEUE = "sophia.materialize.snowflake"
DERIVED = "gong_calls_enriched"


def broker(h: Harness) -> redis.Redis:
    return redis.Redis.from_url(h.env["SOPHIA_BROKER_URL"])


def task_runs(h: Harness, offset: int, name: str) -> int:
    text = h.stack.processes["worker"].log_path.read_bytes()[offset:].decode(errors="replace")
    return len(re.findall(rf"Task {re.escape(name)}\[[^\]]+\] succeeded", text))


def test_snowflake_is_coalesced_by_default_on_a_redis_broker() -> None:
    settings = load_settings({"SOPHIA_BROKER_URL": "redis://127.0.0.1:6379/0"})
    assert coalesces(settings, "snowflake")
    assert not coalesces(settings, "postgres")
    amqp = load_settings({"SOPHIA_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"})
    assert not coalesces(amqp, "snowflake")  # RabbitMQ keeps one materialize message per batch
    none = load_settings({"SOPHIA_BROKER_URL": "redis://127.0.0.1:6379/0", "SOPHIA_COALESCE_TARGETS": ""})
    assert not coalesces(none, "snowflake")


def test_many_small_batches_reach_snowflake_in_fewer_writes(harness: Harness) -> None:
    log_path = harness.stack.processes["worker"].log_path
    offset = log_path.stat().st_size
    calls = [gong_call() for _ in range(8)]
    for call in calls:  # 8 requests, each older than the 50 ms flush age before the next: 8 validate batches
        assert harness.post(envelope(call)).status_code == 202
        time.sleep(0.12)
    for call in calls:
        harness.wait(lambda c=call: landed_everywhere(harness, c["metaData"]["id"]), 30, "the call in every target")
    harness.wait(lambda: task_runs(harness, offset, "sophia.materialize") >= 1, 10, "the materialize run logged")
    validates = task_runs(harness, offset, "sophia.validate")
    writes = task_runs(harness, offset, "sophia.materialize")
    assert validates >= 6, validates
    assert 1 <= writes <= validates // 2, (writes, validates)
    b = broker(harness)
    buffer_key = f"{BUFFER_PREFIX}{SF_QUEUE}:{DERIVED}"
    harness.wait(lambda: b.llen(buffer_key) == 0 and b.zcard(buffer_key + ":cuts") == 0, 10, "the buffer emptied")
    harness.wait(lambda: not list(b.scan_iter(f"sophia:events:{SF_QUEUE}:*")), 10, "every Snowflake cut released")


def derived_documents(n: int) -> list[dict]:
    spec = load_spec(load_settings().flow_path)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    events = [make_event("gong_calls", gong_call(), f"tb-{uuid.uuid4().hex}", stamp, stamp, "webhook")
              for _ in range(n)]
    validated = pipeline.validate_events(spec, events).documents["gong_calls"]
    return pipeline.derive_documents(spec, "gong_calls", validated).documents[DERIVED]


def test_a_cut_whose_worker_died_before_publishing_is_swept_and_written(harness: Harness) -> None:
    """A cut of the Snowflake buffer, pending and never published (the worker was killed in between)."""
    b = broker(harness)
    docs = derived_documents(2)
    key = f"sophia:events:{SF_QUEUE}:{DERIVED}:orphan-{uuid.uuid4().hex[:8]}"
    b.rpush(key, *[orjson.dumps(d) for d in docs])
    pending = f"{BUFFER_PREFIX}{SF_QUEUE}:{DERIVED}:cuts"
    b.zadd(pending, {key: time.time() - 120})
    for d in docs:
        cid = d["metaData"]["id"]
        harness.wait(lambda c=cid: harness.sf_rows(c), 40, "the swept cut's call in Snowflake")
    harness.wait(lambda: b.exists(key) == 0, 10, "the swept cut released")
    assert b.zscore(pending, key) is None


def test_queue_length_of_a_coalesced_target_counts_its_buffered_documents(harness: Harness) -> None:
    from sophia_tasks.observe.queues import broker_snapshot

    settings = load_settings().with_overrides(queue_prefix="tb-qlen-")  # no worker serves this prefix
    spec = load_spec(settings.flow_path)
    b = broker(harness)
    buf = target_buffer(settings, b, "snowflake", DERIVED)
    try:
        buf.append(derived_documents(3))
        assert broker_snapshot(settings, spec).lengths()["tb-qlen-sophia.materialize.snowflake"] == 3
    finally:
        b.delete(buf.buffer_key, buf.since_key)
