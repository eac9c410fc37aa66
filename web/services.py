"""Clients the web app shares across requests, built once per process from the settings."""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from typing import Any

import orjson
import redis as redis_lib
from celery import Celery
from flask import current_app

from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.ingest.buffer import APPEND_LUA, IngestBuffer, buffer_for
from sophia_tasks.messaging.config import publisher
from sophia_tasks.observe.stats import COUNTERS, THROUGHPUT_WINDOW, field
from sophia_tasks.settings import Settings, is_redis_url
from web.auth import AuthConfig

log = logging.getLogger(__name__)

DEDUPE_PREFIX = "sophia:dedupe:"
TRACE_PREFIX = "sophia:trace:"  # sophia_tasks.observe.trace.PREFIX, spelt out in the scripts below


# Lua: ``dedupe(keys, window)`` sets each dedupe key for the window; answers 1 per first delivery
# (its key set now), 0 per duplicate, and how many were first deliveries. ``count(...)`` counts them as
# accepted. It runs last and through ``redis.pcall``: a counter that cannot be incremented (a value
# someone overwrote) costs a statistic, never the event, which is deduped and appended by then.
# Integer increments: HINCRBYFLOAT and INCRBYFLOAT format a long double, and were a sixth of the
# script's time on the server. The values they left are integral, so HINCRBY and INCRBY accept them.
_DEDUPE_AND_COUNT_LUA = """
local function trace_key(dedupe_key)
  return 'sophia:trace:' .. string.sub(dedupe_key, #'sophia:dedupe:' + 1)
end
local function dedupe(keys, window, tr)
  local out, n, now = {}, 0, nil
  for i, key in ipairs(keys) do
    if redis.call('SET', key, '1', 'NX', 'EX', window) then
      out[i] = 1
      n = n + 1
      if tr then
        local tk = trace_key(key)
        redis.call('HSET', tk, 'received', tr[1], 'source', tr[2], 'credential', tr[3])
        redis.call('EXPIRE', tk, window)
      end
    else
      out[i] = 0
      if tr then
        local tk = trace_key(key)
        if redis.call('EXISTS', tk) == 1 then
          if not now then
            local t = redis.call('TIME')
            now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
          end
          redis.call('HINCRBY', tk, 'duplicates', 1)
          redis.call('HSET', tk, 'duplicate_at', now)
        end
      end
    end
  end
  return out, n
end
local function trace_args(on, received, source, credential)
  if on == '1' then return {received, source, credential} end
  return nil
end
local function count(counters, field, tp_key, tp_expiry, n)
  if n > 0 then
    redis.pcall('HINCRBY', counters, field, n)
    redis.pcall('INCRBY', tp_key, n)
    redis.pcall('EXPIRE', tp_key, tp_expiry)
  end
end
"""

# The trace (sophia_tasks.observe.trace): a first delivery's hash gets its receipt, source and credential
# name, with the dedupe window as its expiry; a duplicate is counted in it. ARGV trace part: on ('1' or
# ''), received, source, credential name.
# KEYS: dedupe keys; ARGV: window, counters hash, counter field, throughput key, its expiry, trace part.
_DEDUPE_AND_COUNT = _DEDUPE_AND_COUNT_LUA + """
local out, n = dedupe(KEYS, ARGV[1], trace_args(ARGV[6], ARGV[7], ARGV[8], ARGV[9]))
count(ARGV[2], ARGV[3], ARGV[4], ARGV[5], n)
return out
"""

# When the broker's Redis and the cache's Redis are one server (two databases), the dedupe, the append
# to the ingest buffer and the count are one round trip: this script selects each database itself.
# KEYS: dedupe keys..., buffer, since. ARGV: cache db, broker db, window, counters hash, counter field,
# throughput key, its expiry, the trace part (4), then one encoded event per dedupe key. Answers 1/0
# per event as above.
_DEDUPE_COUNT_AND_APPEND = _DEDUPE_AND_COUNT_LUA + APPEND_LUA + """
local n = #KEYS - 2
local keys = {}
for i = 1, n do keys[i] = KEYS[i] end
redis.call('SELECT', ARGV[1])
local out, fresh_n = dedupe(keys, ARGV[3], trace_args(ARGV[8], ARGV[9], ARGV[10], ARGV[11]))
if fresh_n > 0 then
  local fresh = {}
  for i = 1, n do
    if out[i] == 1 then fresh[#fresh + 1] = ARGV[11 + i] end
  end
  redis.call('SELECT', ARGV[2])
  append(KEYS[n + 1], KEYS[n + 2], fresh)
  redis.call('SELECT', ARGV[1])
  count(ARGV[4], ARGV[5], ARGV[6], ARGV[7], fresh_n)
end
return out
"""


@functools.lru_cache(maxsize=64)
def _accepted_field(collection: str) -> str:
    """The stats field that counts ``collection``'s accepted events (built once per collection)."""
    return field("events_accepted", {"collection": collection})


def same_server(url_a: str, url_b: str) -> tuple[int, int] | None:
    """The two database numbers when both URLs name one Redis server with one login, else None."""
    if not (is_redis_url(url_a) and is_redis_url(url_b)) or url_a.split("://")[0] != url_b.split("://")[0]:
        return None
    from redis.connection import parse_url

    a, b = parse_url(url_a), parse_url(url_b)
    who = ("host", "port", "path", "username", "password")
    if any(a.get(k) for k in ("ssl",)) or [a.get(k) for k in who] != [b.get(k) for k in who]:
        return None
    return int(a.get("db") or 0), int(b.get("db") or 0)


class BrokerUnavailable(RuntimeError):
    pass


class Services:
    def __init__(self, settings: Settings, spec: FlowSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.auth = AuthConfig(
            tokens=tuple(t.reveal() for t in settings.webhook_tokens),
            webhook_secrets=tuple(s.reveal() for s in settings.webhook_secrets),
            gong_public_key_pem=settings.gong_jwt_public_key,
            insecure_no_auth=settings.insecure_no_auth,
            public_url=settings.public_url.rstrip("/") if settings.public_url else None,
            read_tokens=tuple(t.reveal() for t in settings.read_tokens),
        )
        self._celery: Celery | None = None
        self._redis: redis_lib.Redis | None = None
        self._stats: Any = None
        self._pid = os.getpid()
        # The server's threads share these clients. Creating them under a lock matters: a client
        # built twice by two threads at once leaves one unreferenced, and a garbage-collected
        # redis client closes its connection pool, sockets in use by the other thread included.
        self._lock = threading.Lock()
        self._dedupe_script: Any = None
        self._buffer: Any = None
        self._accept_script: Any = None
        # (cache db, broker db) when one script can dedupe, count and append; else None.
        self._one_trip = same_server(settings.redis_url, settings.broker_url)

    def _fork_check(self) -> None:
        if os.getpid() != self._pid:  # the server forked us: never share sockets across processes
            with self._lock:
                if os.getpid() != self._pid:
                    self._celery = None
                    self._redis = None
                    self._stats = None
                    self._dedupe_script = None
                    self._buffer = None
                    self._accept_script = None
                    self._pid = os.getpid()

    @property
    def celery(self) -> Celery:
        self._fork_check()
        if self._celery is None:
            with self._lock:
                if self._celery is None:
                    self._celery = self._make_celery()
        return self._celery

    def _make_celery(self) -> Celery:
        app = publisher(self.settings, self.spec, "sophia_tasks_web")
        # No task-sent event per request: it is one more broker round trip, and sophia.ingest
        # messages are gathered by the batcher, never run as tasks, so Flower would show them
        # as sent forever. Tasks the workers send still emit it.
        app.conf.task_send_sent_event = False
        return app

    @property
    def redis(self) -> redis_lib.Redis:
        self._fork_check()
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    self._redis = redis_lib.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2,
                                                           socket_timeout=5)
        return self._redis

    @property
    def buffer(self) -> IngestBuffer | None:
        """The ingest buffer on a plain Redis broker (``sophia_tasks.ingest.buffer``), else None."""
        self._fork_check()
        if self._buffer is None:
            from sophia_tasks.ingest.buffer import enabled_for

            if not enabled_for(self.settings):
                return None
            with self._lock:
                if self._buffer is None:
                    from redis.backoff import ExponentialBackoff
                    from redis.retry import Retry

                    # Like the Celery publish it replaces: two quick retries, then a 503.
                    client = redis_lib.Redis.from_url(
                        self.settings.broker_url, socket_connect_timeout=2, socket_timeout=5,
                        retry=Retry(ExponentialBackoff(cap=0.5, base=0.2), 2))
                    self._buffer = buffer_for(self.settings, client)
        return self._buffer

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Hand the events to the broker; raise BrokerUnavailable if they did not get there.

        On a plain Redis broker: one append to the ingest buffer. Elsewhere: one ``sophia.ingest``
        message (with publisher confirms on RabbitMQ).
        """
        buffer = self.buffer
        if buffer is not None:
            try:
                buffer.append(events)
                return
            except redis_lib.RedisError as exc:
                log.error("broker unavailable: %s", exc)
                raise BrokerUnavailable(str(exc)) from exc
        try:
            self.celery.send_task(
                "sophia.ingest", args=[events], queue=self.settings.queue("sophia.ingest"),
                retry=True, retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                                          "interval_max": 0.5})
        except Exception as exc:  # kombu raises OperationalError, socket errors, amqp errors...
            log.error("broker unavailable: %s", exc)
            raise BrokerUnavailable(str(exc)) from exc

    def _trace_args(self, events: list[dict[str, Any]], credential: str | None) -> list[Any]:
        """The scripts' trace part: the request's receipt, source and credential name (never the secret)."""
        if not self.settings.trace_enabled or not events:
            return ["", "", "", ""]
        first = events[0]
        return ["1", first.get("received_at") or "", first.get("source") or "", credential or "unknown"]

    def accept(self, events: list[dict[str, Any]], collection: str, credential: str | None = None) -> list[bool]:
        """Claim the events' ids for the dedupe window, hand the first deliveries to the broker and
        count them as accepted; answers True per first delivery. Raises BrokerUnavailable when the
        broker did not take them (then nothing is deduped or counted, so the sender's retry is new).

        One round trip when the broker and the cache are one Redis server; else a dedupe-and-count
        script, then the publish.
        """
        trace = self._trace_args(events, credential)
        if self._one_trip is not None and self.buffer is not None:
            return self._dedupe_count_and_append(events, collection, trace)
        fresh, counted_at = self.dedupe_and_count([e["event_id"] for e in events], collection, trace)
        new_events = [e for e, is_new in zip(events, fresh, strict=False) if is_new]
        if not new_events:
            return fresh
        try:
            self.publish(new_events)
        except BrokerUnavailable:
            self.release([e["event_id"] for e in new_events])
            if counted_at is not None:
                self.uncount(collection, len(new_events), counted_at)
            raise
        if counted_at is None:
            self.count_accepted(collection, len(new_events))
        return fresh

    def _dedupe_count_and_append(self, events: list[dict[str, Any]], collection: str,
                                 trace: list[Any]) -> list[bool]:
        assert self._one_trip is not None
        buffer = self.buffer
        now = int(time.time())
        try:
            script = self._accept_script
            if script is None:
                script = self._accept_script = buffer.client.register_script(_DEDUPE_COUNT_AND_APPEND)
            flags = script(
                keys=[DEDUPE_PREFIX + e["event_id"] for e in events] + [buffer.buffer_key, buffer.since_key],
                args=[self._one_trip[0], self._one_trip[1], self.settings.dedupe_window_seconds, COUNTERS,
                      _accepted_field(collection), f"sophia:stats:tp:capture:{now}",
                      THROUGHPUT_WINDOW * 2, *trace, *[orjson.dumps(e) for e in events]])
        except redis_lib.RedisError as exc:
            log.error("broker unavailable: %s", exc)
            raise BrokerUnavailable(str(exc)) from exc
        return [bool(f) for f in flags]

    def dedupe_and_count(self, event_ids: list[str], collection: str,
                         trace: list[Any] | None = None) -> tuple[list[bool], int | None]:
        """Mark ids as seen for the dedupe window (True where this is the first delivery) and count
        the first deliveries as accepted, in one round trip (a Lua script).

        The count is taken before the publish; :meth:`uncount` takes it back when the broker
        refuses (the rare 503). If Redis cannot be reached every event is treated as new (a
        duplicate then costs a rewrite of the same version, a refusal would lose data) and
        counted the plain way after the publish. Answers the flags and the second
        the count went to (None: not counted), which ``uncount`` needs.
        """
        now = int(time.time())
        try:
            script = self._dedupe_script
            if script is None:
                script = self._dedupe_script = self.redis.register_script(_DEDUPE_AND_COUNT)
            flags = script(keys=[DEDUPE_PREFIX + e for e in event_ids],
                           args=[self.settings.dedupe_window_seconds, COUNTERS, _accepted_field(collection),
                                 f"sophia:stats:tp:capture:{now}", THROUGHPUT_WINDOW * 2,
                                 *(trace or ["", "", "", ""])])
            return [bool(f) for f in flags], now
        except redis_lib.RedisError as exc:
            log.warning("dedupe store unavailable, accepting without dedupe: %s", exc)
            return [True] * len(event_ids), None

    def uncount(self, collection: str, n: int, counted_at: int) -> None:
        """Take back what :meth:`dedupe_and_count` counted for events that did not reach the broker."""
        if not n:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hincrbyfloat(COUNTERS, _accepted_field(collection), -n)
            pipe.incrbyfloat(f"sophia:stats:tp:capture:{counted_at}", -n)
            pipe.execute()
        except redis_lib.RedisError as exc:
            log.warning("could not take back the count of %d refused events: %s", n, exc)

    def rate_limited(self, subject: str) -> int | None:
        """Fixed one-minute window per credential; answers seconds to wait, or None.

        A dedupe-store outage lets traffic through: refusing everyone would lose events.
        """
        limit = self.settings.rate_limit_per_minute
        if limit <= 0:
            return None
        now = time.time()
        window = int(now // 60)
        key = f"sophia:ratelimit:{subject}:{window}"
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 120)
            count = int(pipe.execute()[0])
        except redis_lib.RedisError as exc:
            log.warning("rate limiter unavailable, letting the request through: %s", exc)
            return None
        if count > limit:
            return max(1, int((window + 1) * 60 - now) + 1)
        return None

    def count_accepted(self, collection: str, n: int) -> None:
        from sophia_tasks.observe.stats import Stats

        self._fork_check()
        if self._stats is None:
            with self._lock:
                if self._stats is None:
                    self._stats = Stats(self.settings.redis_url)
        self._stats.record([("events_accepted", {"collection": collection}, n)], {"capture": n})

    def release(self, event_ids: list[str]) -> None:
        """Drop the dedupe keys of events that did not reach the broker, so the sender's retry is accepted."""
        try:
            if event_ids:
                self.redis.delete(*[DEDUPE_PREFIX + e for e in event_ids], *[TRACE_PREFIX + e for e in event_ids])
        except redis_lib.RedisError as exc:
            log.warning("could not drop dedupe keys: %s", exc)


def services() -> Services:
    return current_app.extensions["sophia"]
