"""Redis broker transport that cannot lose a message to a worker killed mid-delivery.

Why: kombu's Redis transport takes a message off the queue with ``BRPOP`` and only
afterwards records it in the ``unacked`` hash (``QoS.append``). A worker killed by
SIGKILL or the OOM killer between those two steps loses that message for good: it
is neither in the queue nor restorable. Seen here as ten events missing after a
worker was killed mid-stream (one ingest message of ten events).

This transport closes the window from the producer side. Publishing a message to
one of our queues writes, in one ``MULTI``/``EXEC``, the message to the queue *and*
its entry to kombu's own ``unacked`` hash and index, scored with the publish time.
A consumer that receives it overwrites the entry with the delivery time (as kombu
always does) and deletes it on ack; a consumer killed at any moment leaves the entry,
and kombu's regular ``restore_visible`` sweep puts the message back once it is older
than the visibility timeout. The price: a message that waits in the queue longer
than the visibility timeout (a backlog of more than an hour by default) is restored
once more while still queued, i.e. delivered twice. Every stage is idempotent, so a
duplicate costs work, never correctness.

Only queues whose names start with one of ``guarded_prefixes`` (the transport
option set by :func:`sophia_tasks.celery_app.configure`) are guarded: Celery's own
reply and broadcast queues are consumed without acks and must not be registered.
"""
from __future__ import annotations

from time import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps


#: Property set on the unacked-hash copy of a message that is still waiting in its queue.
QUEUED_MARK = "sophia_queued"


class Channel(kombu_redis.Channel):
    guarded_prefixes: tuple[str, ...] = ()
    from_transport_options = kombu_redis.Channel.from_transport_options + ("guarded_prefixes",)

    def _guarded(self, queue: str) -> bool:
        return bool(self.guarded_prefixes) and str(queue).startswith(tuple(self.guarded_prefixes))

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        if kwargs.get("_publish_batch") is not None or not self._guarded(queue):
            return super()._put(queue, message, **kwargs)
        props = message["properties"]
        delivery = props.get("delivery_info") or {}
        tag = props["delivery_tag"]
        payload = dumps(message)
        # The copy in the unacked hash is marked, so queue-depth readers (sophia_tasks.queues) can
        # tell a message still in its queue from one a worker has reserved; a delivery overwrites
        # the entry with the unmarked payload. Marked last: readers only look at the entry's tail.
        marked = dict(message, properties=dict(props, **{QUEUED_MARK: True}))
        entry = dumps([marked, delivery.get("exchange", ""), delivery.get("routing_key", queue)])
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            with client.pipeline(transaction=True) as pipe:
                pipe.hset(self.unacked_key, tag, entry)
                pipe.zadd(self.unacked_index_key, {tag: time()})
                pipe.lpush(key, payload)
                if self._expires and queue in self._expires:
                    for p in self.priority_steps:
                        pipe.pexpire(self._q_for_pri(queue, p), self._expires[queue])
                pipe.execute()
        return None


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
