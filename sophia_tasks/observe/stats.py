"""Counters shared by every process (web workers, Celery children) through Redis.

Gunicorn and Celery both fork; counting in Redis hashes makes the sum of all
processes the only number there is, and the web app's /metrics reads it back.
Stats never block the pipeline: a failure to count is logged and dropped.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Mapping

import redis as redis_lib

from sophia_tasks.observe.trace import RECORD_LUA, TraceBatch

log = logging.getLogger(__name__)

#: The buckets of the receipt -> written lag histogram, in seconds.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

COUNTERS = "sophia:stats:counters"
THROUGHPUT_WINDOW = 60
STAGES = ("capture", "validate", "derive", "materialize")
GAUGES = "sophia:stats:gauges"


def field(name: str, labels: Mapping[str, Any] | None = None) -> str:
    if not labels:
        return name
    return name + "|" + "|".join(f"{k}={labels[k]}" for k in sorted(labels))


def parse_field(raw: str) -> tuple[str, dict[str, str]]:
    name, *pairs = raw.split("|")
    labels = {}
    for pair in pairs:
        k, _, v = pair.partition("=")
        labels[k] = v
    return name, labels


def read_gauges(client: redis_lib.Redis) -> dict[str, float]:
    """The gauges hash as field -> value (for readers that hold a client, not a ``Stats``)."""
    return {k.decode(): float(v) for k, v in client.hgetall(GAUGES).items()}


class Stats:
    def __init__(self, redis_url: str) -> None:
        self.client = redis_lib.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        self._trace_sha: str | None = None

    def incr(self, items: Iterable[tuple[str, Mapping[str, Any] | None, float]],
             trace: TraceBatch | None = None) -> None:
        self.record(items, {}, trace=trace)

    def record(self, items: Iterable[tuple[str, Mapping[str, Any] | None, float]],
               ticks: Mapping[str, float], gauges: Mapping[str, float] | None = None,
               trace: TraceBatch | None = None) -> None:
        """Counters, throughput buckets and gauges in one round trip (the webhook calls this per
        request, every stage per batch: a live batch of a few events had paid ten round trips).
        ``trace``: the batch's trace fields (``sophia_tasks.observe.trace``), one Lua call in the same trip."""
        try:
            pipe = self.client.pipeline(transaction=False)
            n = 0
            for name, labels, amount in items:
                if amount:
                    pipe.hincrbyfloat(COUNTERS, field(name, labels), amount)
                    n += 1
            n += self._queue_ticks(pipe, ticks)
            if gauges:
                pipe.hset(GAUGES, mapping=dict(gauges))
                n += 1
            if trace:
                # EVALSHA, not a registered Script: a pipeline holding one asks SCRIPT EXISTS first,
                # a round trip more per batch. The script is loaded once per process, and again
                # (one extra trip) only when the server has forgotten it.
                if self._trace_sha is None:
                    self._trace_sha = self.client.script_load(RECORD_LUA)
                pipe.evalsha(self._trace_sha, 0, *trace.args)
                n += 1
            if n:
                replies = pipe.execute(raise_on_error=False)
                if trace and isinstance(replies[-1], redis_lib.exceptions.NoScriptError):
                    self._trace_sha = self.client.script_load(RECORD_LUA)
                    replies[-1] = self.client.evalsha(self._trace_sha, 0, *trace.args)
                errors = [r for r in replies if isinstance(r, Exception)]
                if errors:
                    raise errors[0]
        except redis_lib.RedisError as exc:
            log.warning("could not record stats: %s", exc)

    @staticmethod
    def _queue_ticks(pipe: Any, counts: Mapping[str, float]) -> int:
        """Per-second buckets (kept two minutes) behind the sliding-window throughput gauge."""
        now = int(time.time())
        n = 0
        for stage, amount in counts.items():
            if amount:
                key = f"sophia:stats:tp:{stage}:{now}"
                pipe.incrbyfloat(key, amount)
                pipe.expire(key, THROUGHPUT_WINDOW * 2)
                n += 1
        return n

    def counters(self) -> dict[str, float]:
        raw = self.client.hgetall(COUNTERS)
        return {k.decode(): float(v) for k, v in raw.items()}

    def counter(self, name: str, **labels: Any) -> float:
        value = self.client.hget(COUNTERS, field(name, labels))
        return float(value) if value is not None else 0.0

    def gauges(self) -> dict[str, float]:
        """Every gauge (``last_written|target=<t>`` and friends): last value wins across processes."""
        return read_gauges(self.client)

    def last_written(self) -> dict[str, float]:
        """Target -> epoch seconds of its last successful write (the staleness clock)."""
        out: dict[str, float] = {}
        for raw, value in self.gauges().items():
            name, labels = parse_field(raw)
            if name == "last_written" and labels.get("target"):
                out[labels["target"]] = value
        return out

    def throughput(self, stages: Iterable[str] = STAGES) -> dict[str, float]:
        """Events per second over the last full minute, per stage."""
        now = int(time.time())
        out: dict[str, float] = {}
        for stage in stages:
            keys = [f"sophia:stats:tp:{stage}:{s}" for s in range(now - THROUGHPUT_WINDOW, now)]
            values = self.client.mget(keys)
            out[stage] = round(sum(float(v) for v in values if v is not None) / THROUGHPUT_WINDOW, 3)
        return out

    def throughput_all(self) -> dict[str, float]:
        return self.throughput(STAGES)
