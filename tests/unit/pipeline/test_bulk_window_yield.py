"""The bulk window yields to live events that are behind (a real Redis, db 13: no other unit test writes its gauges)."""
from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import redis

from sophia_tasks.core.documents import format_version, utcnow
from sophia_tasks.materializers import WriteResult
from sophia_tasks.observe.stats import GAUGES, Stats
from sophia_tasks.pipeline.bulk_window import BulkWindow, window_for
from sophia_tasks.pipeline.records import record_written
from sophia_tasks.settings import load_settings

URL = "redis://127.0.0.1:6379/13"  # its own db: test_stats (db 12) rewrites the gauges it reads


@pytest.fixture
def client() -> redis.Redis:
    c = redis.Redis.from_url(URL)
    c.delete(GAUGES)
    yield c
    c.delete(GAUGES)
    c.close()


def window(client: redis.Redis, yield_lag: float = 0.5, yield_max: float = 5.0) -> BulkWindow:
    return BulkWindow(client, 1, key=f"test:bulk:{uuid.uuid4().hex[:8]}", yield_lag=yield_lag, yield_max=yield_max)


def live_lag(client: redis.Redis, target: str, lag: float, age: float = 0.0) -> None:
    client.hset(GAUGES, mapping={f"live_lag|target={target}": lag, f"live_lag_at|target={target}": time.time() - age})


def test_nothing_behind_nothing_waits(client: redis.Redis) -> None:
    w = window(client)
    live_lag(client, "redis", 0.2)
    live_lag(client, "postgres", 3.0, age=60)  # stale: live traffic stopped a minute ago
    started = time.monotonic()
    assert w.acquire(wait_max=1)
    # yielded_s is the window's own measure; the wall-clock bound only catches a wait (slack for a busy machine)
    assert w.yielded_s == 0 and time.monotonic() - started < 2.0
    client.delete(w.key)


def test_a_batch_waits_until_live_events_catch_up(client: redis.Redis) -> None:
    w = window(client)
    live_lag(client, "postgres", 2.5)
    threading.Timer(0.6, lambda: live_lag(client, "postgres", 0.1)).start()
    started = time.monotonic()
    assert w.acquire(wait_max=1)
    waited = time.monotonic() - started
    assert 0.5 < waited < 3.5 and 0.5 < w.yielded_s < 3.5
    assert w.pacing  # yielding is not "no worker": the run keeps pacing
    client.delete(w.key)


def test_yielding_is_bounded_so_a_backfill_always_progresses(client: redis.Redis) -> None:
    w = window(client, yield_max=0.5)
    stop = threading.Event()

    def keep_behind() -> None:
        while not stop.is_set():
            live_lag(client, "redis", 4.0)
            time.sleep(0.05)

    keeper = threading.Thread(target=keep_behind)
    keeper.start()
    try:
        started = time.monotonic()
        assert w.acquire(wait_max=1)
        assert 0.4 < time.monotonic() - started < 3.0  # bounded: yield_max 0.5 s, plus a busy machine's slack
    finally:
        stop.set()
        keeper.join(2)
    client.delete(w.key)


def test_turned_off_it_never_looks(client: redis.Redis) -> None:
    w = window(client, yield_lag=0)
    live_lag(client, "redis", 9.0)
    assert w.live_behind() is None
    assert w.acquire(wait_max=1) and w.yielded_s == 0
    client.delete(w.key)
    assert window_for(load_settings({"SOPHIA_BULK_YIELD_LAG": "0", "SOPHIA_REDIS_URL": URL})).yield_lag == 0
    assert window_for(load_settings({"SOPHIA_REDIS_URL": URL})).yield_lag == 0.5


def test_live_batches_of_inline_targets_set_the_gauge_bulk_and_coalesced_ones_do_not(client: redis.Redis) -> None:
    stats = Stats(URL)
    ctx = SimpleNamespace(stats=stats, settings=load_settings({}))
    doc = {"_meta": {"received_at": format_version(utcnow())}}
    record_written(ctx, "redis", "c", [doc], WriteResult(written=1), "live")
    record_written(ctx, "postgres", "c", [doc], WriteResult(written=1), "bulk")
    record_written(ctx, "snowflake", "c", [doc], WriteResult(written=1), "live")  # coalesced: waits on purpose
    fields = {k.decode() for k in client.hkeys(GAUGES)}
    assert {"live_lag|target=redis", "live_lag_at|target=redis"} <= fields
    assert not any(f.startswith("live_lag") and ("postgres" in f or "snowflake" in f) for f in fields)
    assert 0 <= float(client.hget(GAUGES, "live_lag|target=redis")) < 5
