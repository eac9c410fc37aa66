"""The per-target cap, on a real Redis (a scratch database)."""
from __future__ import annotations

import time

import redis

from sophia_tasks.pipeline.bulkhead import SLOT_TTL, Bulkhead


def client() -> redis.Redis:
    c = redis.Redis.from_url("redis://127.0.0.1:6379/12")
    c.delete("sophia:bulkhead:n1:postgres", "sophia:bulkhead:n1:redis", "sophia:bulkhead:n2:postgres")
    return c


def test_cap_per_node_and_target() -> None:
    bh = Bulkhead(client(), limit=2)
    a = bh.acquire("n1", "postgres")
    b = bh.acquire("n1", "postgres")
    assert a and b
    assert bh.acquire("n1", "postgres") is None      # third writer to the same target waits
    assert bh.acquire("n1", "redis") is not None     # another target is not affected
    assert bh.acquire("n2", "postgres") is not None  # nor another node
    bh.release("n1", "postgres", a)
    assert bh.acquire("n1", "postgres") is not None


def test_slots_of_a_killed_process_expire() -> None:
    c = client()
    c.zadd("sophia:bulkhead:n1:postgres", {"dead1": time.time() - SLOT_TTL - 1, "dead2": time.time() - SLOT_TTL - 5})
    assert Bulkhead(c, limit=1).acquire("n1", "postgres") is not None


def test_unreachable_redis_lets_writes_through() -> None:
    bh = Bulkhead(redis.Redis(port=1, socket_connect_timeout=0.2), limit=1)
    assert bh.acquire("n1", "postgres") is not None
    bh.release("n1", "postgres", "x")


def test_a_starting_node_clears_what_a_killed_run_left() -> None:
    from sophia_tasks.pipeline.bulkhead import clear_node

    c = client()
    bh = Bulkhead(c, limit=1)
    assert bh.acquire("n1", "postgres") and bh.acquire("n1", "redis")
    assert bh.acquire("n1", "postgres") is None
    assert clear_node(c, "n1") == 2
    assert bh.acquire("n1", "postgres") is not None


def test_a_writer_waits_for_a_slot_that_frees_within_the_wait() -> None:
    import threading

    bh = Bulkhead(client(), limit=1)
    held = bh.acquire("n1", "postgres")
    assert held is not None
    threading.Timer(0.2, bh.release, args=("n1", "postgres", held)).start()
    started = time.monotonic()
    assert bh.acquire("n1", "postgres", wait=3.0) is not None
    assert time.monotonic() - started < 2.5  # it got the freed slot, not the end of the wait


def test_a_writer_steps_aside_when_the_slot_stays_busy_for_the_whole_wait() -> None:
    bh = Bulkhead(client(), limit=1)
    assert bh.acquire("n1", "postgres") is not None
    started = time.monotonic()
    assert bh.acquire("n1", "postgres", wait=0.3) is None
    assert time.monotonic() - started >= 0.2
