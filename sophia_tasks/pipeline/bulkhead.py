"""Per-target bulkheads: at most N pool processes of a worker node write to one target at once.

Each target has its own queue, but one worker's pool serves every queue: without a
cap, a target that hangs (a locked table, a stalled network) would end up holding
every process and delay the healthy targets. A task that finds its target's slots
full waits up to ``SOPHIA_BULKHEAD_WAIT`` seconds for one (a healthy target frees a slot within
a write), then goes back on its queue after a short pause without spending its retry budget.
Slots live in a Redis sorted set scored by time, so a killed process's slot expires.
"""
from __future__ import annotations

import logging
import time
import uuid

import redis as redis_lib

log = logging.getLogger(__name__)

SLOT_TTL = 600.0  # longer than any task's hard time limit


class Bulkhead:
    def __init__(self, client: redis_lib.Redis, limit: int, slot_ttl: float = SLOT_TTL) -> None:
        self.client = client
        self.limit = limit
        self.slot_ttl = slot_ttl

    def _key(self, node: str, target: str) -> str:
        return f"sophia:bulkhead:{node}:{target}"

    def acquire(self, node: str, target: str, wait: float = 0.0) -> str | None:
        """A slot token, or None when the target still has ``limit`` writers on this node after
        ``wait`` seconds.

        Why wait: a healthy target frees a slot within one write (milliseconds to a few hundred),
        and stepping aside re-publishes the whole batch; only a target that stays busy for
        ``wait`` is treated as slow. If Redis cannot be asked, the write goes ahead: the cap is
        a safeguard, not a lock.
        """
        deadline = time.monotonic() + wait
        pause = 0.01
        while True:
            token = self._try_acquire(node, target)
            if token is not None or time.monotonic() + pause > deadline:
                return token
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _try_acquire(self, node: str, target: str) -> str | None:
        token = uuid.uuid4().hex
        if self.limit <= 0:
            return token
        key = self._key(node, target)
        now = time.time()
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.zremrangebyscore(key, "-inf", now - self.slot_ttl)
            pipe.zadd(key, {token: now})
            pipe.zcard(key)
            pipe.expire(key, int(self.slot_ttl))
            count = int(pipe.execute()[2])
            if count > self.limit:
                self.client.zrem(key, token)
                return None
        except redis_lib.RedisError as exc:
            log.warning("bulkhead unavailable, writing anyway: %s", exc)
        return token

    def release(self, node: str, target: str, token: str) -> None:
        try:
            self.client.zrem(self._key(node, target), token)
        except redis_lib.RedisError:
            pass  # the slot expires on its own


def clear_node(client: redis_lib.Redis, node: str) -> int:
    """A node that is starting holds no slot: whatever its name still holds was left by a killed run."""
    try:
        keys = list(client.scan_iter(match=f"sophia:bulkhead:{node}:*", count=100))
        return int(client.delete(*keys)) if keys else 0
    except redis_lib.RedisError as exc:
        log.warning("could not clear the bulkhead slots of %s: %s", node, exc)
        return 0
