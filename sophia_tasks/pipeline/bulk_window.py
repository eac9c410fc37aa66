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

Live first: a slot is also held back while live events are behind, that is while the last live
batch written to any target (within ``LIVE_FRESH`` seconds) was written more than
``SOPHIA_BULK_YIELD_LAG`` seconds after receipt (``live_lag`` gauges, ``pipeline.records.record_written``).
Why: on 2 cores a 100,000-call backfill kept the live lag p50 near 0.2 s, except for 30-60 s
episodes (the Snowflake emulator stalled for 12-34 s) in which it rose to ~2 s and the p99 to
~3 s: the bulk lane's batches kept their share of the CPU while live events queued. Yielding is
bounded (``YIELD_MAX`` per batch), so a backfill always progresses, and time spent yielding does
not count towards ``WAIT_MAX``.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis as redis_lib

from sophia_tasks.observe.stats import field, parse_field, read_gauges

log = logging.getLogger(__name__)

KEY = "sophia:bulk:inflight"
#: Seconds after which a slot counts as abandoned (a bulk batch takes seconds).
SLOT_TTL = 300.0
#: Seconds a publisher waits for a slot before it stops pacing.
WAIT_MAX = 30.0
#: A live lag gauge older than this says nothing about now (live traffic may have stopped).
LIVE_FRESH = 5.0
#: Seconds one bulk batch waits at most for live events to catch up.
YIELD_MAX = 10.0

# KEYS: the set. ARGV: token, now, ttl, limit. Answers 1 when the token now holds a slot.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return 1
"""


class BulkWindow:
    def __init__(self, client: redis_lib.Redis, limit: int, key: str = KEY, yield_lag: float = 0.0,
                 yield_max: float = YIELD_MAX) -> None:
        self.client = client
        self.limit = limit
        self.key = key
        self.pacing = limit > 0
        self.yield_lag = yield_lag
        self.yield_max = yield_max
        self.yielded_s = 0.0  # in all, for the run's summary and the tests
        self._take = client.register_script(_TAKE)

    def live_behind(self) -> float | None:
        """The worst fresh live lag, in seconds, when it is over ``yield_lag``; else None."""
        if self.yield_lag <= 0:
            return None
        try:
            gauges = read_gauges(self.client)
        except redis_lib.RedisError:
            return None
        now = time.time()
        worst = None
        for raw, value in gauges.items():
            name, labels = parse_field(raw)
            if name != "live_lag":
                continue
            at = gauges.get(field("live_lag_at", labels), 0.0)
            if now - at <= LIVE_FRESH and value > self.yield_lag and (worst is None or value > worst):
                worst = value
        return worst

    def _yield_to_live(self) -> None:
        """Wait, at most ``yield_max``, while live events are behind."""
        started = time.monotonic()
        behind = self.live_behind()
        if behind is None:
            return
        log.info("live events were written %.1f s after receipt: the bulk lane waits (up to %.0f s)", behind,
                 self.yield_max)
        while behind is not None and time.monotonic() - started < self.yield_max:
            time.sleep(0.1)
            behind = self.live_behind()
        self.yielded_s += time.monotonic() - started

    def acquire(self, wait_max: float = WAIT_MAX) -> str | None:
        """A slot token (pass it to the batch's task), or None when the run no longer paces."""
        if not self.pacing:
            return None
        self._yield_to_live()
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
    return BulkWindow(client, settings.bulk_inflight, yield_lag=settings.bulk_yield_lag)
