"""Queue depth and waiting bytes, read from the broker (Redis lists or AMQP queues)."""
from __future__ import annotations

from typing import Any

import redis as redis_lib

from sophia_tasks.celery_app import INGEST_QUEUE, STAGE_QUEUES, materialize_queue
from sophia_tasks.flowspec import FlowSpec
from sophia_tasks.settings import Settings

# kombu's Redis transport keeps priorities 3, 6 and 9 in sibling lists named with this separator.
_PRIORITY_SEP = "\x06\x16"


def all_queues(settings: Settings, spec: FlowSpec) -> dict[str, str | None]:
    """Queue name -> the target it feeds (None for stage queues)."""
    out: dict[str, str | None] = {settings.queue(INGEST_QUEUE): None}
    out.update({settings.queue(q): None for q in STAGE_QUEUES})
    out.update({materialize_queue(settings, t): t for t in spec.materializations})
    return out


def queue_stats(settings: Settings, spec: FlowSpec) -> tuple[dict[str, float], dict[str, float]]:
    queues = all_queues(settings, spec)
    lengths: dict[str, float] = {}
    sizes: dict[str, float] = {}
    if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        client = redis_lib.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=5)
        try:
            pipe = client.pipeline(transaction=False)
            names: list[tuple[str, str]] = []
            for q in queues:
                for key in (q, *(f"{q}{_PRIORITY_SEP}{p}" for p in (3, 6, 9))):
                    pipe.llen(key)
                    pipe.memory_usage(key)
                    names.append((q, key))
            replies = pipe.execute()
        finally:
            client.close()
        for i, (q, _key) in enumerate(names):
            n, size = replies[2 * i], replies[2 * i + 1]
            lengths[q] = lengths.get(q, 0.0) + float(n or 0)
            target = queues[q]
            if target is not None:
                sizes[target] = sizes.get(target, 0.0) + float(size or 0)
        return lengths, sizes
    from kombu import Connection

    with Connection(settings.broker_url, connect_timeout=3) as conn:
        channel: Any = conn.channel()
        try:
            for q, target in queues.items():
                try:
                    _, count, _ = channel.queue_declare(queue=q, passive=True)
                except Exception:
                    channel = conn.channel()
                    count = 0
                lengths[q] = float(count)
        finally:
            try:
                channel.close()
            except Exception:
                pass
    return lengths, sizes
