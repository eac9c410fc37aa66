"""Live validate tasks on one node never exceed SOPHIA_VALIDATE_CONCURRENCY at once (real worker)."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis

from tests.integration.conftest import Harness, gong_call
from tests.integration.test_pipeline import envelope


def test_live_validates_are_capped_per_node_and_every_event_lands(harness: Harness) -> None:
    cache = redis.Redis.from_url(harness.env["SOPHIA_REDIS_URL"])
    calls = [gong_call() for _ in range(60)]
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(sum(int(cache.zcard(k)) for k in cache.scan_iter("sophia:bulkhead:*:stage:validate")))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(8) as pool:  # spread over many cuts, so several validates queue at once
            for i, resp in enumerate(pool.map(lambda c: harness.post(envelope(c)), calls)):
                assert resp.status_code == 202, resp.text
                if i % 10 == 9:
                    time.sleep(0.06)
        for call in calls:
            harness.wait(lambda c=call: harness.redis_doc(c["metaData"]["id"]), 30, "every call in Redis")
    finally:
        stop.set()
        watcher.join(5)
    assert 1 <= max(seen) <= (os.cpu_count() or 2)
    harness.wait(lambda: sum(int(cache.zcard(k)) for k in cache.scan_iter("sophia:bulkhead:*:stage:validate")) == 0,
                 10, "every validate slot given back")
