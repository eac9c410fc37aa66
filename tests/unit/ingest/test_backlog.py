"""The backlog index on a real Redis (a scratch database): what waits for each target, kept in the
round trips that store and release batches, and repaired when a batch vanishes."""
from __future__ import annotations

import uuid

import orjson
import redis

from sophia_tasks.ingest.backlog import index_key, read_backlog
from sophia_tasks.ingest.buffer import IngestBuffer
from sophia_tasks.pipeline.claim_checks import ClaimStore

URL = "redis://127.0.0.1:6379/12"


def client() -> redis.Redis:
    return redis.Redis.from_url(URL)


def target() -> str:
    """A target name of this test's own: other suites share the scratch database."""
    return f"t-{uuid.uuid4().hex[:10]}"


def docs(n: int, size: int = 100) -> list[dict]:
    return [{"_meta": {"event_id": f"e{i}"}, "text": "x" * size} for i in range(n)]


def test_claim_checked_batches_count_per_target_until_each_target_releases_them() -> None:
    a, b = target(), target()
    store = ClaimStore(client(), ttl_seconds=600)
    first, second = docs(3), docs(2, 500)
    ref1 = store.put(first, [a, b])
    ref2 = store.put(second, [a])
    got = read_backlog(store.client, [a, b], [])
    assert got[a] == (5, ref1["bytes"] + ref2["bytes"])
    assert got[b] == (3, ref1["bytes"])
    store.release(ref1, a)
    store.release(ref1, a)  # a redelivered task's second release changes nothing
    assert read_backlog(store.client, [a, b], []) == {a: (2, ref2["bytes"]), b: (3, ref1["bytes"])}
    store.release(ref1, b)
    store.release(ref2, a)
    assert read_backlog(store.client, [a, b], []) == {a: (0, 0), b: (0, 0)}
    assert not store.client.exists(index_key(a), index_key(b))


def test_a_redelivered_put_of_the_same_batch_counts_once() -> None:
    a = target()
    store = ClaimStore(client(), ttl_seconds=600)
    batch = docs(4)
    ref = store.put(batch, [a], name=f"task-{a}:coll")
    store.put(batch, [a], name=f"task-{a}:coll")
    assert read_backlog(store.client, [a], []) == {a: (4, ref["bytes"])}
    store.release(ref, a)


def test_an_entry_whose_batch_expired_is_dropped_when_read() -> None:
    a = target()
    store = ClaimStore(client(), ttl_seconds=600)
    ref = store.put(docs(3), [a])
    store.client.delete(ref["$batch"])  # what the backstop expiry does to a batch never written
    assert read_backlog(store.client, [a], []) == {a: (0, 0)}
    assert store.client.hlen(index_key(a)) == 0


def test_a_target_buffer_counts_its_documents_then_its_cuts_until_released() -> None:
    a = target()
    c = client()
    buf = IngestBuffer(c, f"test.{a}.materialize:coll", ttl_seconds=600, target=a)
    items = docs(5, 200)
    size = sum(len(orjson.dumps(d)) for d in items)
    buf.append(items)
    assert read_backlog(c, [a], [(a, buf.buffer_key)]) == {a: (5, size)}
    part = buf.cut(3, 60, 60, f"test.{a}.validate", 0)  # a partial cut: three of five
    assert part is not None and part["n"] == 3
    assert read_backlog(c, [a], [(a, buf.buffer_key)]) == {a: (5, size)}
    rest = buf.cut(10, 0, 0, f"test.{a}.validate", 0)  # the rest, by age: the whole list is renamed
    assert rest is not None and rest["n"] == 2
    assert read_backlog(c, [a], [(a, buf.buffer_key)]) == {a: (5, size)}
    assert not c.exists(buf.bytes_key)  # the buffer is empty: its counter starts again from zero
    buf.release(part)
    buf.release(part)  # a redelivery releases nothing more
    assert read_backlog(c, [a], [(a, buf.buffer_key)])[a][0] == 2
    buf.release(rest)
    assert read_backlog(c, [a], [(a, buf.buffer_key)]) == {a: (0, 0)}
    c.delete(buf.seq_key, buf.pending_key)


def test_the_ingest_buffer_keeps_no_backlog_entry() -> None:
    c = client()
    name = f"test.{uuid.uuid4().hex[:8]}.ingest"
    buf = IngestBuffer(c, name, ttl_seconds=600)
    buf.append(docs(2))
    ref = buf.cut(10, 0, 0, name + ".validate", 0)
    assert ref is not None and ref["n"] == 2
    assert not c.exists(buf.bytes_key)
    buf.release(ref)
    c.delete(buf.seq_key, buf.pending_key)
