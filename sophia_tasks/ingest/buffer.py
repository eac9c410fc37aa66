"""The ingest buffer: on a Redis broker the webhook appends events to a list, and workers cut it into batches.

Why: with one ``sophia.ingest`` message per request, a stream of single-event webhooks
cost the worker's main process a fetch, a delivery record, a decode and an ack per event,
and the web a full Celery publish per request. At 500 events/s the worker fell ~110,000
events behind (docs/benchmarks.md). Here the web makes one ``RPUSH`` (inside a Lua call)
per request, the worker's main process never reads an event, and batches are cut inside
Redis by count or age.

How, with nothing lost:

* ``append`` (web): ``RPUSH`` the encoded events onto the buffer list; the first event in an
  empty buffer stamps its arrival time (``:since``, Redis' own clock). The 202 goes out only
  after this returns, and the list lives in the broker's Redis: exactly as durable as a
  queued message.
* ``cut`` (every worker's batcher timer, one Lua call): when the buffer holds a full batch,
  or its oldest event is older than the flush age (held up to ``max_wait`` while the
  validate queue is backlogged), move the first ``batch_size`` events atomically into their
  own list ``sophia:events:<queue>:<n>`` and record ``<n>`` in a pending set. The worker then
  publishes one ``sophia.validate`` task carrying only the reference, and drops ``<n>`` from
  the pending set. Many workers may cut at once: each Lua call is atomic.
* A worker killed between the cut and the publish leaves ``<n>`` pending: ``sweep`` (every few
  seconds, any worker) publishes a validate task for every cut pending longer than
  ``STALE_CUT_SECONDS``. At worst a batch is validated twice, which every stage tolerates.
* The validate task reads the list (``load``), and deletes it (``release``) once its documents
  are handed to the materialize queues. A redelivered task that finds its list gone was
  already settled; the list's expiry (``SOPHIA_BATCH_TTL_SECONDS``) is a backstop only.

Other brokers (RabbitMQ) keep the ``sophia.ingest`` queue and its publisher confirms.

The same buffer coalesces a queued target's batches (``SOPHIA_COALESCE_TARGETS``, Snowflake by
default): the validate task appends the derived documents to
``sophia:ingest-buffer:<materialize queue>:<collection>`` instead of publishing one materialize
task per batch, and the batcher cuts it by ``SOPHIA_COALESCE_ROWS`` or ``SOPHIA_COALESCE_SECONDS``
into one materialize task per cut. Why: a Snowflake MERGE has a fixed cost (~50 ms on the
emulator), so at 500 events/s the ~80-event batches of the live path spent more time in that
fixed cost than in the rows, and their tasks held pool processes the validate tasks needed.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis as redis_lib

from sophia_tasks.core.documents import encoded, remember_encoding
from sophia_tasks.ingest.backlog import BYTES_SUFFIX, index_key
from sophia_tasks.messaging.routing import LANES, materialize_queue
from sophia_tasks.settings import is_redis_url

log = logging.getLogger(__name__)

REF_KEY = "$events"
BUFFER_PREFIX = "sophia:ingest-buffer:"
#: Seconds a cut may stay unpublished before a sweep publishes it (a cut-to-publish takes milliseconds).
STALE_CUT_SECONDS = 30.0

#: Lua: ``stamp(since)`` records the arrival of the first event into an empty buffer (Redis' clock, ms).
#: The stamp exists exactly while the buffer holds events: a cut that empties the buffer deletes it.
STAMP_LUA = """
local function stamp(since)
  if redis.call('EXISTS', since) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', since, t[1] * 1000 + math.floor(t[2] / 1000))
  end
end
"""

#: Lua: ``append(buffer, since, items)`` pushes encoded events and stamps the buffer; answers its length.
#: For scripts that append (the web's one-round-trip accept): the same rules as ``IngestBuffer.append``.
APPEND_LUA = STAMP_LUA + """
local function append(buf, since, items)
  local len = 0
  for i = 1, #items, 500 do
    len = redis.call('RPUSH', buf, unpack(items, i, math.min(i + 499, #items)))
  end
  if #items > 0 then stamp(since) end
  return len
end
"""

# KEYS: since.
_STAMP = STAMP_LUA + "stamp(KEYS[1])\n"

#: Events per RPUSH of ``IngestBuffer.append``.
PUSH_CHUNK = 1000

# KEYS: buffer, since, seq, pending cuts, validate queue, the buffer's byte counter. ARGV: batch size,
# flush ms, max wait ms, validate backlog, events key prefix, ttl seconds, and the backlog index of a
# target buffer ('' for the ingest buffer): the cut's documents and bytes move from the buffer's counter
# to an entry of their own (sophia_tasks.ingest.backlog). Answers {events key, count, age ms} or nil.
_CUT = """
local len = redis.call('LLEN', KEYS[1])
if len == 0 then
  redis.call('DEL', KEYS[2], KEYS[6])
  return nil
end
local size = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local since = tonumber(redis.call('GET', KEYS[2]) or now)
local age = now - since
if len < size then
  if age < tonumber(ARGV[2]) then return nil end
  if age < tonumber(ARGV[3]) and redis.call('LLEN', KEYS[5]) > tonumber(ARGV[4]) then return nil end
end
local take = math.min(len, size)
local n = redis.call('INCR', KEYS[3])
local key = ARGV[5] .. n
local tracked = ARGV[7] ~= ''
local nbytes = 0
if take == len and redis.call('EXISTS', key) == 0 then
  -- The whole buffer is the cut (the usual case under live load): a rename moves no event. Never
  -- over a list that exists (a sequence reset by hand while old cuts live): that would drop it.
  redis.call('RENAME', KEYS[1], key)
  if tracked then nbytes = tonumber(redis.call('GET', KEYS[6]) or '0') end
else
  local items = redis.call('LRANGE', KEYS[1], 0, take - 1)
  redis.call('LTRIM', KEYS[1], take, -1)
  for i = 1, #items, 500 do
    redis.call('RPUSH', key, unpack(items, i, math.min(i + 499, #items)))
  end
  if tracked then
    for i = 1, #items do nbytes = nbytes + #items[i] end
    if take < len then redis.call('DECRBY', KEYS[6], nbytes) end
  end
end
redis.call('EXPIRE', key, tonumber(ARGV[6]))
redis.call('ZADD', KEYS[4], now / 1000, key)
if tracked then redis.call('HSET', ARGV[7], key, take .. ':' .. nbytes) end
if len == take then redis.call('DEL', KEYS[2], KEYS[6]) end
return {key, take, age}
"""


def is_ref(value: Any) -> bool:
    return type(value) is dict and REF_KEY in value


def enabled_for(settings: Any) -> bool:
    """The buffer is used on a Redis broker, TLS or not (the claim store's condition)."""
    return settings.batch_ttl_seconds > 0 and is_redis_url(settings.broker_url)


class IngestBuffer:
    def __init__(self, client: redis_lib.Redis, queue: str, ttl_seconds: int, target: str | None = None) -> None:
        """``target``: the target a target buffer gathers for; its documents then count in that
        target's backlog (``sophia_tasks.ingest.backlog``)."""
        self.client = client
        self.queue = queue
        base = BUFFER_PREFIX + queue
        self.buffer_key = base
        self.since_key = base + ":since"
        self.seq_key = base + ":seq"
        self.pending_key = base + ":cuts"
        self.events_prefix = f"sophia:events:{queue}:"
        self.bytes_key = base + BYTES_SUFFIX
        self.backlog_key = index_key(target) if target else ""
        self.ttl = int(ttl_seconds)
        self._cut = client.register_script(_CUT)

    # -- web ---------------------------------------------------------------------------------
    def append(self, events: list[dict[str, Any]]) -> int:
        """Put events in the buffer (one round trip, one transaction); answers its length. Raises RedisError.

        Plain RPUSH, then the stamp: the events never pass through Lua, which cost Redis three times
        the CPU of the push itself (8.4 ms against 2.6 ms for 500 documents of 5 KB).
        """
        items = [encoded(e) for e in events]
        if not items:
            return self.length()
        pipe = self.client.pipeline(transaction=True)
        if self.backlog_key:
            pipe.incrby(self.bytes_key, sum(len(i) for i in items))
        for i in range(0, len(items), PUSH_CHUNK):
            pipe.rpush(self.buffer_key, *items[i:i + PUSH_CHUNK])
        pipe.eval(_STAMP, 1, self.since_key)
        return int(pipe.execute()[-2])

    # -- worker ------------------------------------------------------------------------------
    def cut(self, batch_size: int, flush_seconds: float, max_wait_seconds: float, validate_queue: str,
            validate_backlog: int) -> dict[str, Any] | None:
        """Move the next due batch into its own list; answers its reference, or None when none is due."""
        out = self._cut(keys=[self.buffer_key, self.since_key, self.seq_key, self.pending_key, validate_queue,
                              self.bytes_key],
                        args=[int(batch_size), int(flush_seconds * 1000), int(max_wait_seconds * 1000),
                              int(validate_backlog), self.events_prefix, self.ttl, self.backlog_key])
        if not out:
            return None
        key, n, age = out
        return {REF_KEY: key.decode() if isinstance(key, bytes) else key, "n": int(n), "at": int(time.time()),
                "age_ms": int(age)}

    def published(self, ref: dict[str, Any]) -> None:
        """The validate task for this cut is on the broker: the sweep may forget it."""
        self.client.zrem(self.pending_key, ref[REF_KEY])

    def stale_cuts(self, older_than: float = STALE_CUT_SECONDS) -> list[dict[str, Any]]:
        """Cuts whose validate task was never confirmed published (a worker died in between)."""
        cutoff = time.time() - older_than
        refs = []
        for key, at in self.client.zrangebyscore(self.pending_key, "-inf", cutoff, withscores=True):
            name = key.decode() if isinstance(key, bytes) else key
            n = self.client.llen(name)
            if n == 0:  # already validated and released by a task published before the crash
                self.client.zrem(self.pending_key, name)
                continue
            refs.append({REF_KEY: name, "n": int(n), "at": int(at), "swept": True})
        return refs

    def length(self) -> int:
        """Events waiting to be cut."""
        return int(self.client.llen(self.buffer_key))

    # -- validate task -------------------------------------------------------------------------
    def load(self, ref: dict[str, Any]) -> list[Any] | None:
        """The events of a cut, or None when the list is gone (released, or the backstop expired).
        Inside ``documents.encoding_cache()`` each item's text is remembered for its next encode."""
        items = self.client.lrange(ref[REF_KEY], 0, -1)
        if not items:
            return None
        out = []
        for item in items:
            value = orjson.loads(item)
            remember_encoding(value, item)
            out.append(value)
        return out

    def release(self, ref: dict[str, Any]) -> None:
        """Every event of the cut is handed on (or dead-lettered): delete the list. Idempotent."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(ref[REF_KEY])
            pipe.zrem(self.pending_key, ref[REF_KEY])
            if self.backlog_key:
                pipe.hdel(self.backlog_key, ref[REF_KEY])
            pipe.execute()
        except redis_lib.RedisError as exc:  # the expiry removes it later; the work is done
            log.warning("could not release ingest batch %s: %s", ref.get(REF_KEY), exc)

    def expired(self, ref: dict[str, Any]) -> bool:
        return time.time() - float(ref.get("at") or 0) >= self.ttl


def coalesces(settings: Any, target: str) -> bool:
    """Batches for ``target`` are gathered in a target buffer before they are written."""
    return target in settings.coalesce_targets and enabled_for(settings)


def coalesced_buffers(settings: Any, spec: Any) -> list[tuple[str, str, str]]:
    """(target, collection, lane) of every target buffer the flow spec implies: one per coalesced
    target, binding and lane."""
    return [(m.name, b.source, lane) for m in spec.materializations.values() if coalesces(settings, m.name)
            for b in m.bindings for lane in LANES]


def target_buffer_name(settings: Any, target: str, collection: str, lane: str = "live") -> str:
    """The name a target buffer's keys derive from: its materialize queue and the collection."""
    return f"{materialize_queue(settings, target, lane)}:{collection}"


def target_buffer(settings: Any, client: redis_lib.Redis, target: str, collection: str,
                  lane: str = "live") -> IngestBuffer:
    """The buffer that gathers ``collection``'s documents for ``target`` in one lane."""
    return IngestBuffer(client, target_buffer_name(settings, target, collection, lane), settings.batch_ttl_seconds,
                        target=target)


def buffer_for(settings: Any, client: redis_lib.Redis | None = None) -> IngestBuffer | None:
    """The ingest buffer for these settings, or None when the broker is not plain Redis."""
    if not enabled_for(settings):
        return None
    client = client or redis_lib.Redis.from_url(settings.broker_url, socket_connect_timeout=3, socket_timeout=10)
    return IngestBuffer(client, settings.queue("sophia.ingest"), settings.batch_ttl_seconds)
