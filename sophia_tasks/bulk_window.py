"""The bulk lane's window: at most ``SOPHIA_BULK_INFLIGHT`` backfill or rebuild batches in flight.

Why: the bulk lane has queues of its own, but the workers' pool serves every queue. A backfill
that published all its batches at once kept every pool process busy with 500-event bulk batches,
so a live event waited for a process to come free and then shared the CPU with three bulk
batches: live p99 lag went from under 1 s to ~5 s while a backfill ran (docs/benchmarks.md). With
a window of two batches, the other pool processes stay free for live work, and two processes
still keep both cores busy when nothing live arrives.

How: the publisher (``sophia-tasks backfill``, ``rebuild``, the ``sophia.backfill`` task) takes a
slot before it publishes a batch; the validate task that finishes the batch gives the slot back.
Slots live in a Redis sorted set scored by time, so a slot whose task died expires after
``SLOT_TTL`` seconds. When no slot frees within ``WAIT_MAX`` seconds (no worker is running), the
run stops pacing and publishes the rest at once, as before, saying so in the log.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis as redis_lib

log = logging.getLogger(__name__)

KEY = "sophia:bulk:inflight"
#: Seconds after which a slot counts as abandoned (a bulk batch takes seconds).
SLOT_TTL = 300.0
#: Seconds a publisher waits for a slot before it stops pacing.
WAIT_MAX = 30.0

# KEYS: the set. ARGV: token, now, ttl, limit. Answers 1 when the token now holds a slot.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return 1
"""


class BulkWindow:
    def __init__(self, client: redis_lib.Redis, limit: int, key: str = KEY) -> None:
        self.client = client
        self.limit = limit
        self.key = key
        self.pacing = limit > 0
        self._take = client.register_script(_TAKE)

    def acquire(self, wait_max: float = WAIT_MAX) -> str | None:
        """A slot token (pass it to the batch's task), or None when the run no longer paces."""
        if not self.pacing:
            return None
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_max
        pause = 0.02
        while True:
            try:
                if self._take(keys=[self.key], args=[token, time.time(), SLOT_TTL, self.limit]):
                    return token
            except redis_lib.RedisError as exc:  # the window is a courtesy to live traffic, never a stop
                log.warning("bulk window unavailable, publishing without pacing: %s", exc)
                self.pacing = False
                return None
            if time.monotonic() >= deadline:
                log.warning("no worker finished a bulk batch in %.0f s; publishing the rest without pacing "
                            "(is a worker running?)", wait_max)
                self.pacing = False
                return None
            time.sleep(pause)
            pause = min(pause * 1.5, 0.2)

    def release(self, token: str | None) -> None:
        if not token:
            return
        try:
            self.client.zrem(self.key, token)
        except redis_lib.RedisError:
            pass  # the slot expires on its own


def window_for(settings: Any, client: redis_lib.Redis | None = None) -> BulkWindow:
    """The window in ``SOPHIA_REDIS_URL``'s database; ``client`` if the caller has one for it."""
    client = client or redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=10)
    return BulkWindow(client, settings.bulk_inflight)
