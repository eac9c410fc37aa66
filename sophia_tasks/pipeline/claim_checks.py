"""Claim checks: a derived batch is stored once beside the broker; materialize messages carry its key.

Why: a batch of 500 enriched calls is ~3 MB of JSON. Sent inline, each of the three
materialize messages encodes it, the worker's main process decodes it again (Celery reads
every payload to detect the message protocol), base64-decodes it, pickles it to a pool
child that decodes it once more, and kombu re-encodes the whole envelope to record the
delivery. Profiled on a drain, that moving of bytes cost more CPU than all the writes. With
a claim check the batch is encoded once, stored once with ``SET``, and each target's task
reads it with one ``GET`` and one decode; the messages are a few hundred bytes.

Where: in the broker's own Redis (only when the broker is Redis), so a batch is exactly as
durable as the message that points at it (append-only file, same server). With RabbitMQ
the documents travel inline as before.

Lifetime, with nothing lost and nothing leaked:
* ``put`` stores the blob and the set of targets that still need it, with a long expiry
  (``SOPHIA_BATCH_TTL_SECONDS``, default 7 days) as a backstop only.
* a materialize task calls ``release(ref, target)`` after its target's work is settled
  (written, its failures re-sent under a new claim or dead-lettered). The release is
  idempotent per target (a set, not a counter), so a task redelivered after releasing
  cannot take a share that belongs to another target; the last target deletes the blob.
* a task that finds its blob gone has already been settled (the blob is deleted only once
  every target released it) unless the backstop expired, which is logged as an error with
  the batch key: ``sophia-tasks rebuild`` restores such a target from the journal.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Iterable

import orjson
import redis as redis_lib

from sophia_tasks.ingest.backlog import entry, index_key
from sophia_tasks.settings import is_redis_url

log = logging.getLogger(__name__)

PREFIX = "sophia:batch:"
REF_KEY = "$batch"


def is_ref(value: Any) -> bool:
    return type(value) is dict and REF_KEY in value


class ClaimStore:
    def __init__(self, client: redis_lib.Redis, ttl_seconds: int) -> None:
        self.client = client
        self.ttl = int(ttl_seconds)

    def put(self, documents: list[dict[str, Any]], targets: Iterable[str], name: str | None = None) -> dict[str, Any]:
        """Store ``documents`` for ``targets``; the reference every target's message carries.

        ``name`` (the producing task's id and what it made) makes the key deterministic: a task
        redelivered after a crash overwrites its own batch instead of leaving an orphan that
        only the expiry would remove.
        """
        targets = sorted(set(targets))
        key = PREFIX + (name or uuid.uuid4().hex)
        blob = orjson.dumps(documents)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(key, blob, ex=self.ttl)
        pipe.sadd(key + ":pending", *targets)
        pipe.expire(key + ":pending", self.ttl)
        for target in targets:  # what waits for each target (sophia_tasks.ingest.backlog)
            pipe.hset(index_key(target), key, entry(len(documents), len(blob)))
        pipe.execute()
        return {REF_KEY: key, "n": len(documents), "bytes": len(blob), "at": int(time.time())}

    def expired(self, ref: dict[str, Any]) -> bool:
        """True when a missing batch is older than the backstop (lost, not settled)."""
        return time.time() - float(ref.get("at") or 0) >= self.ttl

    def get(self, ref: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The documents, or None when every target has released them (or the backstop expired)."""
        blob = self.client.get(ref[REF_KEY])
        return None if blob is None else orjson.loads(blob)

    def release(self, ref: dict[str, Any], target: str) -> None:
        """``target`` is settled; the last target to settle deletes the batch. Idempotent."""
        key = ref[REF_KEY]
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.srem(key + ":pending", target)
            pipe.scard(key + ":pending")
            pipe.hdel(index_key(target), key)
            _, left, _ = pipe.execute()
            if int(left) == 0:
                self.client.delete(key, key + ":pending")
        except redis_lib.RedisError as exc:  # the expiry removes it later; the work is done
            log.warning("could not release batch %s for %s: %s", key, target, exc)


def store_for(settings: Any) -> ClaimStore | None:
    """The claim store for these settings: on a Redis broker unless turned off, else None."""
    url = settings.broker_url
    if settings.batch_ttl_seconds <= 0 or not is_redis_url(url):
        return None
    client = redis_lib.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=30)
    return ClaimStore(client, settings.batch_ttl_seconds)
