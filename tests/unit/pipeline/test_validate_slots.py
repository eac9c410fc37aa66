"""The per-node cap on live validate tasks: a bulkhead whose abandoned slots free themselves quickly."""
from __future__ import annotations

import time
import uuid

import redis

from sophia_tasks.pipeline.bulkhead import Bulkhead
from sophia_tasks.pipeline.runtime import VALIDATE_SLOT_TTL
from sophia_tasks.pipeline.tasks import VALIDATE_SLOT
from sophia_tasks.settings import load_settings

URL = "redis://127.0.0.1:6379/12"


def test_the_cap_defaults_to_the_cpu_count_and_can_be_set() -> None:
    import os

    assert load_settings({}).validate_concurrency == (os.cpu_count() or 2)
    assert load_settings({"SOPHIA_VALIDATE_CONCURRENCY": "3"}).validate_concurrency == 3


def test_two_slots_then_none_and_a_dead_holders_slot_expires() -> None:
    client = redis.Redis.from_url(URL)
    node = f"test-{uuid.uuid4().hex[:8]}"
    bh = Bulkhead(client, 2, slot_ttl=VALIDATE_SLOT_TTL)
    try:
        a, b = bh.acquire(node, VALIDATE_SLOT), bh.acquire(node, VALIDATE_SLOT)
        assert a and b
        assert bh.acquire(node, VALIDATE_SLOT, wait=0.2) is None
        bh.release(node, VALIDATE_SLOT, a)
        assert bh.acquire(node, VALIDATE_SLOT)
        key = f"sophia:bulkhead:{node}:{VALIDATE_SLOT}"
        client.zadd(key, {t: time.time() - VALIDATE_SLOT_TTL - 1 for t in client.zrange(key, 0, -1)})
        assert bh.acquire(node, VALIDATE_SLOT)  # the old holders count as dead
        assert 0 < client.ttl(key) <= VALIDATE_SLOT_TTL
    finally:
        client.delete(f"sophia:bulkhead:{node}:{VALIDATE_SLOT}")
