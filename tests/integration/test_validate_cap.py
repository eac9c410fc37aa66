"""Live validate tasks on one node wait while SOPHIA_VALIDATE_CONCURRENCY slots are taken (real worker)."""
from __future__ import annotations

import os
import socket
import time

import redis

from sophia_tasks.pipeline.tasks import VALIDATE_SLOT
from tests.integration.conftest import Harness, gong_call
from tests.integration.test_pipeline import envelope


def test_a_live_batch_waits_for_a_validate_slot_then_lands(harness: Harness) -> None:
    cache = redis.Redis.from_url(harness.env["SOPHIA_REDIS_URL"])
    host = socket.gethostname()
    nodes = [f"{name}@{host}" for name, proc in harness.stack.processes.items()
             if name.startswith("worker") and proc.popen.poll() is None]
    assert nodes
    keys = [f"sophia:bulkhead:{node}:{VALIDATE_SLOT}" for node in nodes]
    cap = os.cpu_count() or 2
    for key in keys:  # every slot of every running node taken by someone else
        cache.zadd(key, {f"held-{i}": time.time() for i in range(cap)})
    try:
        call = gong_call()
        cid = call["metaData"]["id"]
        assert harness.post(envelope(call)).status_code == 202
        time.sleep(2.0)
        assert harness.redis_doc(cid) is None  # cut and published, but its validate waits for a slot
    finally:
        cache.delete(*keys)
    harness.wait(lambda: harness.redis_doc(cid), 30, "the call in Redis once a slot is free")
    harness.wait(lambda: all(cache.zcard(k) == 0 for k in keys), 10, "the slot given back")
