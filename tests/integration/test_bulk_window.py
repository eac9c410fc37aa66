"""The bulk lane's window on the real Redis, and a backfill through it on the real stack."""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import orjson
import redis

from sophia_tasks.pipeline.bulk_window import KEY, SLOT_TTL, BulkWindow
from sophia_tasks.settings import load_settings
from tests.integration.conftest import Harness, gong_call


def window(h: Harness, limit: int = 2) -> BulkWindow:
    client = redis.Redis.from_url(h.env["SOPHIA_REDIS_URL"])
    return BulkWindow(client, limit, key=f"test:bulk:{uuid.uuid4().hex[:8]}")


def calls_file(tmp_path: Path, n: int) -> tuple[list[dict], Path]:
    """``n`` fresh calls and the NDJSON file a backfill reads them from."""
    calls = [gong_call() for _ in range(n)]
    path = tmp_path / "calls.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(c) for c in calls) + b"\n")
    return calls, path


def wait_in_redis(harness: Harness, calls: list[dict]) -> None:
    for call in calls:
        cid = call["metaData"]["id"]
        harness.wait(lambda c=cid: harness.redis_doc(c), 60, "the backfilled call in Redis")


def test_a_third_batch_waits_until_one_of_two_is_done(harness: Harness) -> None:
    w = window(harness)
    first, second = w.acquire(), w.acquire()
    assert first and second and first != second
    got: list[str | None] = []
    waiter = threading.Thread(target=lambda: got.append(w.acquire(wait_max=10)))
    waiter.start()
    time.sleep(0.3)
    assert got == []  # still waiting: two batches in flight
    w.release(first)
    waiter.join(5)
    assert got and got[0] and w.pacing
    assert w.client.zcard(w.key) == 2
    w.client.delete(w.key)


def test_with_no_worker_the_run_stops_pacing_instead_of_hanging(harness: Harness) -> None:
    w = window(harness, limit=1)
    assert w.acquire()
    started = time.monotonic()
    assert w.acquire(wait_max=0.5) is None
    assert 0.4 < time.monotonic() - started < 5
    assert not w.pacing and w.acquire() is None  # the rest of the run publishes at once
    w.client.delete(w.key)


def test_a_slot_whose_task_died_expires(harness: Harness) -> None:
    w = window(harness, limit=1)
    w.client.zadd(w.key, {"dead-task": time.time() - SLOT_TTL - 1})
    assert w.acquire(wait_max=1)
    w.client.delete(w.key)


def test_a_backfill_goes_through_the_window_and_gives_every_slot_back(harness: Harness, tmp_path: Path) -> None:
    calls, path = calls_file(tmp_path, 30)
    cache = redis.Redis.from_url(harness.env["SOPHIA_REDIS_URL"])
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(int(cache.zcard(KEY)))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = harness.cli("backfill", "--file", str(path), "--batch-size", "5")
    finally:
        stop.set()
        watcher.join(5)
    assert r.returncode == 0, r.stderr
    wait_in_redis(harness, calls)
    assert max(seen) <= load_settings().bulk_inflight  # never more than SOPHIA_BULK_INFLIGHT in flight
    assert max(seen) >= 1  # and the window was used
    harness.wait(lambda: cache.zcard(KEY) == 0, 20, "every slot given back")


def test_a_backfill_waits_while_live_events_are_behind_and_says_so(harness: Harness, tmp_path: Path) -> None:
    from sophia_tasks.observe.stats import GAUGES

    calls, path = calls_file(tmp_path, 6)
    cache = redis.Redis.from_url(harness.env["SOPHIA_REDIS_URL"])
    stop = threading.Event()

    def live_behind_for(seconds: float) -> None:  # as the worker would record a slow live batch
        until = time.monotonic() + seconds
        while time.monotonic() < until and not stop.is_set():
            cache.hset(GAUGES, mapping={"live_lag|target=test": 3.0, "live_lag_at|target=test": time.time()})
            time.sleep(0.1)
        cache.hset(GAUGES, mapping={"live_lag|target=test": 0.1, "live_lag_at|target=test": time.time()})

    keeper = threading.Thread(target=live_behind_for, args=(1.5,))
    keeper.start()
    try:
        r = harness.cli("backfill", "--file", str(path), "--batch-size", "3")
    finally:
        stop.set()
        keeper.join(5)
        cache.hdel(GAUGES, "live_lag|target=test", "live_lag_at|target=test")
    assert r.returncode == 0, r.stderr
    assert "waited" in r.stdout and "for live events" in r.stdout, r.stdout
    wait_in_redis(harness, calls)
