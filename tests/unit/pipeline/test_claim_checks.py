"""Claim checks on a real Redis (a scratch database): stored once, released per target, idempotent."""
from __future__ import annotations

from types import SimpleNamespace

import redis

from sophia_tasks.pipeline.claim_checks import PREFIX, ClaimStore, is_ref, store_for

URL = "redis://127.0.0.1:6379/12"


def store() -> ClaimStore:
    client = redis.Redis.from_url(URL)
    for key in client.scan_iter(match=PREFIX + "*"):
        client.delete(key)
    return ClaimStore(client, ttl_seconds=600)


def test_a_batch_lives_until_every_target_released_it() -> None:
    s = store()
    docs = [{"_meta": {"event_id": "e1"}, "metaData": {"id": "1"}, "text": "ünïcødé"}]
    ref = s.put(docs, ["redis", "postgres", "snowflake"])
    assert is_ref(ref) and ref["n"] == 1 and ref["bytes"] > 0
    assert s.get(ref) == docs
    s.release(ref, "redis")
    s.release(ref, "redis")  # a redelivered task releasing twice takes nobody else's share
    s.release(ref, "postgres")
    assert s.get(ref) == docs  # snowflake still needs it
    s.release(ref, "snowflake")
    assert s.get(ref) is None
    assert not list(s.client.scan_iter(match=ref["$batch"] + "*"))


def test_the_backstop_expiry_is_set_on_both_keys() -> None:
    s = store()
    ref = s.put([{"a": 1}], ["redis"])
    assert 0 < s.client.ttl(ref["$batch"]) <= 600
    assert 0 < s.client.ttl(ref["$batch"] + ":pending") <= 600


def test_only_a_redis_broker_gets_a_store() -> None:
    def settings(url: str, ttl: int = 3600) -> SimpleNamespace:
        return SimpleNamespace(broker_url=url, batch_ttl_seconds=ttl)

    assert store_for(settings("redis://127.0.0.1:6379/12")) is not None
    assert store_for(settings("amqp://guest:guest@127.0.0.1:5672//")) is None
    assert store_for(settings("redis://127.0.0.1:6379/12", ttl=0)) is None  # turned off: inline documents
    assert not is_ref([{"a": 1}]) and not is_ref({"a": 1})
