"""Queue depth and waiting bytes, read from the broker (Redis lists or AMQP queues).

What an operator needs to know is how much work waits for each target. On the
Redis transport a message waits in one of two places: the queue's lists (ready,
one list per priority step) or kombu's ``unacked`` hash, where a worker keeps what
it has reserved: the batch it is writing, its prefetch, and every retry that waits
for its countdown. Those messages are small on a Redis broker: they carry claim
checks or cut keys, and the documents wait in the stored batches and target
buffers, which the backlog index counts per target (``sophia_tasks.ingest.backlog``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib

from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.ingest.backlog import read_backlog
from sophia_tasks.ingest.buffer import BUFFER_PREFIX, coalesced_buffers, target_buffer_name
from sophia_tasks.messaging.config import broker_connection
from sophia_tasks.messaging.routing import INGEST_QUEUE, LANES, STAGE_QUEUES, materialize_queue
from sophia_tasks.settings import Settings

# kombu's Redis transport keeps priorities 3, 6 and 9 in sibling lists named with this separator.
_PRIORITY_SEP = "\x06\x16"
_PRIORITIES = (3, 6, 9)
# kombu's Redis transport: delivery tag -> JSON [message, exchange, routing_key] of reserved messages.
UNACKED_KEY = "unacked"
# Reserved messages read per scrape; beyond this the per-queue split is extrapolated.
UNACKED_SCAN_LIMIT = 2000

# Reads, per reserved message, its size and its routing key (the last JSON string of the value),
# server-side, so a scrape never copies megabytes of batches over the wire.
_UNACKED_LUA = """
local limit = tonumber(ARGV[1])
local sizes, counts = {}, {}
local cursor, seen = "0", 0
repeat
  local reply = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 200)
  cursor = reply[1]
  local kv = reply[2]
  for i = 2, #kv, 2 do
    local v = kv[i]
    local rk = string.match(string.sub(v, -512), '"([^"]*)"%]%s*$')
    if rk then
      sizes[rk] = (sizes[rk] or 0) + #v
      counts[rk] = (counts[rk] or 0) + 1
    end
    seen = seen + 1
  end
until cursor == "0" or seen >= limit
local out = {seen, redis.call('HLEN', KEYS[1])}
for rk, n in pairs(counts) do
  out[#out + 1] = rk
  out[#out + 1] = n
  out[#out + 1] = sizes[rk]
end
return out
"""


@dataclass
class QueueInfo:
    """One broker queue: what is ready to be taken and what workers hold."""

    name: str
    target: str | None
    lane: str
    ready: float = 0.0
    reserved: float | None = None
    ready_bytes: float | None = None
    reserved_bytes: float | None = None


@dataclass
class BrokerSnapshot:
    queues: dict[str, QueueInfo] = field(default_factory=dict)
    # False on AMQP: the broker reports message counts, not sizes or reservations.
    measured_bytes: bool = True
    # Target -> (documents, bytes) of the stored batches and buffers waiting for it, both lanes
    # (``sophia_tasks.ingest.backlog``; Redis broker only).
    backlog: dict[str, tuple[int, int]] = field(default_factory=dict)

    def lengths(self) -> dict[str, float]:
        return {q.name: q.ready for q in self.queues.values()}

    def bytes_by_target(self) -> dict[str, float]:
        """Bytes of the documents waiting per target, both lanes (empty when not measured): the
        stored batches and buffers of the backlog index, plus the task messages ready or reserved
        on the target's queues (a claim check's few hundred bytes; the documents themselves when a
        message carries them)."""
        if not self.measured_bytes:
            return {}
        out: dict[str, float] = {t: float(b) for t, (_, b) in self.backlog.items()}
        for q in self.queues.values():
            if q.target is not None:
                out[q.target] = out.get(q.target, 0.0) + (q.ready_bytes or 0.0) + (q.reserved_bytes or 0.0)
        return out

    def documents_by_target(self) -> dict[str, float]:
        """Documents of the stored batches and buffers waiting per target (empty when not measured)."""
        if not self.measured_bytes:
            return {}
        return {t: float(n) for t, (n, _) in self.backlog.items()}

    def waiting_by_target(self) -> dict[str, float]:
        """Messages (batches) waiting per target, both lanes, ready plus reserved."""
        out: dict[str, float] = {}
        for q in self.queues.values():
            if q.target is not None:
                out[q.target] = out.get(q.target, 0.0) + q.ready + (q.reserved or 0.0)
        return out


def all_queues(settings: Settings, spec: FlowSpec) -> dict[str, str | None]:
    """Queue name -> the target it feeds (None for stage queues), every lane."""
    return {name: info.target for name, info in _declared(settings, spec).items()}


def _declared(settings: Settings, spec: FlowSpec) -> dict[str, QueueInfo]:
    out: dict[str, QueueInfo] = {settings.queue(INGEST_QUEUE): QueueInfo(settings.queue(INGEST_QUEUE), None, "live")}
    for q in STAGE_QUEUES:
        lane = "bulk" if q == "sophia.backfill" else "live"
        out[settings.queue(q)] = QueueInfo(settings.queue(q), None, lane)
    for lane in LANES:
        for t in spec.materializations:
            name = materialize_queue(settings, t, lane)
            out[name] = QueueInfo(name, t, lane)
    return out


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://", "redis+socket://"))


def broker_snapshot(settings: Settings, spec: FlowSpec) -> BrokerSnapshot:
    """Every declared queue with ready and reserved messages and their bytes."""
    queues = _declared(settings, spec)
    if _is_redis(settings.broker_url):
        backlog = _redis_snapshot(settings.broker_url, queues, _buffers(settings, spec), list(spec.materializations),
                                  [(t, BUFFER_PREFIX + target_buffer_name(settings, t, c, lane))
                                   for t, c, lane in coalesced_buffers(settings, spec)])
        return BrokerSnapshot(queues=queues, measured_bytes=True, backlog=backlog)
    _amqp_snapshot(settings.broker_url, queues)
    return BrokerSnapshot(queues=queues, measured_bytes=False)


def _buffers(settings: Settings, spec: FlowSpec) -> dict[str, tuple[str, ...]]:
    """Queue -> the buffer lists whose items also wait for it (``sophia_tasks.ingest.buffer``)."""
    out: dict[str, tuple[str, ...]] = {settings.queue(INGEST_QUEUE): (BUFFER_PREFIX + settings.queue(INGEST_QUEUE),)}
    for target, collection, lane in coalesced_buffers(settings, spec):
        q = materialize_queue(settings, target, lane)
        out[q] = (*out.get(q, ()), BUFFER_PREFIX + target_buffer_name(settings, target, collection, lane))
    return out


def _redis_snapshot(url: str, queues: dict[str, QueueInfo], buffers: dict[str, tuple[str, ...]],
                    targets: list[str], target_buffers: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """Fills ``queues``; answers the backlog per target (``sophia_tasks.ingest.backlog``)."""
    client = redis_lib.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        pipe = client.pipeline(transaction=False)
        keys: list[tuple[str, bool]] = []
        for q in queues:
            # Events wait in the ingest buffer, a coalesced target's documents in its target buffer
            # (their length counts as ready; a target buffer's bytes are in the backlog).
            extra = buffers.get(q, ())
            for key in (q, *(f"{q}{_PRIORITY_SEP}{p}" for p in _PRIORITIES), *extra):
                measured = key not in extra or queues[q].target is None
                pipe.llen(key)
                if measured:
                    # SAMPLES 0: walk every node (no copying), exact for lists of big batches.
                    pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
                keys.append((q, measured))
        replies = pipe.execute()
        unacked = client.eval(_UNACKED_LUA, 1, UNACKED_KEY, UNACKED_SCAN_LIMIT)
        backlog = read_backlog(client, targets, target_buffers)
    finally:
        client.close()
    for q in queues.values():
        q.ready, q.ready_bytes, q.reserved, q.reserved_bytes = 0.0, 0.0, 0.0, 0.0
    at = 0
    for q, measured in keys:
        n = replies[at]
        size = replies[at + 1] if measured else None
        at += 2 if measured else 1
        info = queues[q]
        info.ready += float(n or 0)
        if n and size:  # an empty list does not exist; MEMORY USAGE answers nil
            info.ready_bytes = (info.ready_bytes or 0.0) + float(size)
    seen, total = float(unacked[0]), float(unacked[1])
    scale = total / seen if seen and total > seen else 1.0
    rest = unacked[2:]
    for j in range(0, len(rest), 3):
        rk = rest[j].decode() if isinstance(rest[j], bytes) else str(rest[j])
        info = queues.get(rk)
        if info is not None:
            info.reserved = float(rest[j + 1]) * scale
            info.reserved_bytes = float(rest[j + 2]) * scale
    return backlog


def _amqp_snapshot(url: str, queues: dict[str, QueueInfo]) -> None:
    """AMQP: ready counts by passive declare; a queue that does not exist yet holds nothing."""
    from kombu import Connection

    clean, tls = broker_connection(url)
    with Connection(clean, connect_timeout=3, ssl=tls) as conn:
        channel: Any = conn.channel()
        try:
            for name, info in queues.items():
                try:
                    _, count, _ = channel.queue_declare(queue=name, passive=True)
                except Exception:
                    # A failed passive declare closes the channel (404): open another one.
                    try:
                        channel.close()
                    except Exception:
                        pass
                    channel = conn.channel()
                    count = 0
                info.ready = float(count)
        finally:
            try:
                channel.close()
            except Exception:
                pass


def queue_stats(settings: Settings, spec: FlowSpec) -> tuple[dict[str, float], dict[str, float]]:
    """(ready messages per queue, bytes waiting per target): the short form of ``broker_snapshot``."""
    snap = broker_snapshot(settings, spec)
    return snap.lengths(), snap.bytes_by_target()

