"""Redis broker transport that cannot lose a message to a worker killed mid-delivery.

Why: kombu's Redis transport takes a message off the queue with ``BRPOP`` and only
afterwards records it in the ``unacked`` hash (``QoS.append``). A worker killed by
SIGKILL or the OOM killer between those two steps loses that message for good: it
is neither in the queue nor restorable. Seen here as ten events missing after a
worker was killed mid-stream (one ingest message of ten events).

How this transport closes the window:

* Publishing a message to one of our queues also records it, in the same ``MULTI``, in a
  per-queue side index (``sophia:queued:<queue>``: delivery tag -> publish time) and keeps
  its payload (``sophia:queued:<queue>:m``).
* Receiving it (``QoS.append``, which records the delivery in ``unacked``) removes it from
  the side index in the same pipeline. From then on kombu's own visibility-timeout restore
  covers it, exactly as before.
* What stays in the side index was either never taken (it is still in its queue) or taken
  by a worker that died inside the window (lost). Queues are FIFO: a message published
  before the oldest message still in the queue (its tail) has been taken. A sweep in every
  worker (``QoS.restore_visible``, every few seconds) puts back the entries older than the
  tail's publish time minus a clock-skew margin (or, with an empty queue, older than a grace
  period), once they were seen on two sweeps in a row (a delivery in progress takes
  microseconds). No message waiting in a long backlog is ever duplicated by this.

Only queues whose names start with one of ``guarded_prefixes`` (the transport option set by
:func:`sophia_tasks.worker.app.configure`) are guarded: Celery's own reply and broadcast
queues are consumed without acks and must not be recorded.
"""
from __future__ import annotations

import logging
from time import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

SIDE_PREFIX = "sophia:queued:"
QUEUES_KEY = "sophia:queued-queues"
#: Seconds an entry must trail the queue's oldest message before it counts as taken (publisher clocks).
SKEW_MARGIN = 30.0
#: With the queue empty, seconds a never-received entry may be in flight before it counts as lost.
EMPTY_GRACE = 5.0
#: Seconds between sweeps in one worker.
SWEEP_EVERY = 5.0


def side_keys(queue: str) -> tuple[str, str]:
    return SIDE_PREFIX + queue, SIDE_PREFIX + queue + ":m"


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: Any) -> None:
        """kombu's delivery record, and the message leaves our side index in the same pipeline."""
        delivery = message.delivery_info
        EX, RK = delivery["exchange"], delivery["routing_key"]
        index, payloads = side_keys(RK)
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()}) \
                .hset(self.unacked_key, delivery_tag, dumps([message._raw, EX, RK])) \
                .zrem(index, delivery_tag) \
                .hdel(payloads, delivery_tag) \
                .execute()
        super(kombu_redis.QoS, self).append(message, delivery_tag)  # the in-process bookkeeping

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        super().restore_visible(start=start, num=num, interval=interval)
        try:
            self.channel.sweep_lost()
        except self.channel.connection_errors:  # the next sweep tries again
            pass
        except Exception:  # never let the sweep stop message delivery
            log.exception("sweeping lost deliveries failed")


class Channel(kombu_redis.Channel):
    QoS = QoS
    guarded_prefixes: tuple[str, ...] = ()
    from_transport_options = kombu_redis.Channel.from_transport_options + ("guarded_prefixes",)
    _last_sweep = 0.0
    _suspects: set[bytes] = set()

    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        """One synchronous client per channel and pool, not one per call.

        kombu builds a new ``redis.Redis`` for every publish, delivery record and ack
        (``conn_or_acquire``); building one costs ~70 us (its response-callback table), several
        times per task. The client holds no connection of its own (the pool does, per thread), so
        one is shared; a new pool (after a fork or a reconnect) gets a new client.
        """
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()
        return client

    def _guarded(self, queue: str) -> bool:
        return bool(self.guarded_prefixes) and str(queue).startswith(tuple(self.guarded_prefixes))

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        props = message["properties"]
        delivery = props.get("delivery_info") or {}
        if (kwargs.get("_publish_batch") is not None or not self._guarded(queue)
                or delivery.get("routing_key") != queue):  # append() finds the index by routing key
            return super()._put(queue, message, **kwargs)
        tag = props["delivery_tag"]
        payload = dumps(message)
        index, payloads = side_keys(queue)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            with client.pipeline(transaction=True) as pipe:
                pipe.zadd(index, {tag: time()})
                pipe.hset(payloads, tag, payload)
                pipe.sadd(QUEUES_KEY, queue)
                pipe.lpush(key, payload)
                if self._expires and queue in self._expires:
                    for p in self.priority_steps:
                        pipe.pexpire(self._q_for_pri(queue, p), self._expires[queue])
                pipe.execute()
        return None

    def sweep_lost(self, force: bool = False) -> int:
        """Put back messages taken by a worker that died before recording them; answers how many."""
        now = time()
        if not force and now - self._last_sweep < SWEEP_EVERY:
            return 0
        self._last_sweep = now
        restored = 0
        suspects: set[bytes] = set()
        with self.conn_or_acquire() as client:
            for raw_queue in client.smembers(QUEUES_KEY):
                queue = raw_queue.decode()
                index, payloads = side_keys(queue)
                horizon = now - EMPTY_GRACE
                tail = client.lindex(queue, -1)
                if tail is not None:
                    try:
                        tail_tag = loads(tail)["properties"]["delivery_tag"]
                    except Exception:
                        continue  # not one of ours: no ordering to rely on
                    published = client.zscore(index, tail_tag)
                    if published is None:
                        continue  # being taken right now; next sweep
                    horizon = min(horizon, float(published) - SKEW_MARGIN)
                for tag in client.zrangebyscore(index, "-inf", f"({horizon}", start=0, num=500):
                    if force or tag in self._suspects:
                        restored += self._restore_lost(client, queue, tag)
                    else:
                        suspects.add(tag)
        self._suspects = suspects
        return restored

    def _restore_lost(self, client: Any, queue: str, tag: bytes) -> int:
        index, payloads = side_keys(queue)

        def put_back(pipe: Any) -> int:
            payload = pipe.hget(payloads, tag)
            still = pipe.zscore(index, tag)
            pipe.multi()
            if payload is None or still is None:
                pipe.zrem(index, tag)
                pipe.hdel(payloads, tag)
                return 0
            # Back at the tail: taken next, as kombu restores; recorded again as waiting in the queue.
            pipe.rpush(queue, payload)
            pipe.zadd(index, {tag: time()})
            return 1

        n = client.transaction(put_back, index, payloads, value_from_callable=True)
        if n:
            log.warning("restored a message of %s taken by a worker that died before recording it (tag %s)",
                        queue, tag.decode(errors="replace"))
        return int(n or 0)


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_options(settings: Any, guarded_prefixes: tuple[str, ...]) -> dict[str, object]:
    """Options for the Redis broker: restore sweeps often enough to honour the visibility timeout.

    kombu scans for abandoned messages every ``interval * throttle`` seconds (100 s by
    default) and its sweep lock outlives a killed holder by ``unacked_mutex_expire``
    (300 s by default); both would delay a killed worker's messages by minutes.
    """
    vt = int(settings.visibility_timeout)
    return {
        "visibility_timeout": vt,
        "unacked_restore_interval": max(1, min(10, vt // 4)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": max(10, min(60, vt)),
        "guarded_prefixes": guarded_prefixes,
        "socket_connect_timeout": 3,
        "socket_timeout": 10,
        "retry_on_timeout": True,
    }
