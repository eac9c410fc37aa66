"""Stats are written in as few round trips as the callers can batch (a real Redis, db 12)."""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from sophia_tasks.core.documents import format_version, utcnow
from sophia_tasks.materializers import WriteResult
from sophia_tasks.observe.stats import Stats
from sophia_tasks.pipeline.records import record_written
from sophia_tasks.settings import Settings

URL = "redis://127.0.0.1:6379/12"


@pytest.fixture
def stats() -> Stats:
    s = Stats(URL)
    s.client.flushdb()
    yield s
    s.client.flushdb()


def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    trips: list[str] = []
    real_execute = redis.client.Pipeline.execute
    real_command = redis.Redis.execute_command

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append("pipeline")
        return real_execute(self, *args, **kwargs)

    def command(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, redis.client.Pipeline):
            trips.append(str(args[0]))
        return real_command(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    monkeypatch.setattr(redis.Redis, "execute_command", command)
    return trips


def test_a_written_batch_records_counters_lag_throughput_and_staleness_in_one_round_trip(
        stats: Stats, monkeypatch: pytest.MonkeyPatch) -> None:
    received = format_version(utcnow())
    docs = [{"_meta": {"received_at": received, "event_id": f"ev-{i}", "published_at": f"v{i}"}, "n": i}
            for i in range(3)]
    failed = docs[2]
    ctx = SimpleNamespace(stats=stats, settings=Settings())
    # The trace script is loaded once per process, by its first batch (flushdb keeps scripts).
    record_written(ctx, "redis", "gong_calls_enriched", [{"_meta": {"event_id": "warm"}}], WriteResult(written=1))
    stats.client.flushdb()
    trips = count_round_trips(monkeypatch)
    before = time.time()
    record_written(ctx, "redis", "gong_calls_enriched", docs, WriteResult(written=2, failed=[(failed, "bad")]),
                   attempt=3)
    assert trips == ["pipeline"]  # the trace fields ride in the same round trip
    monkeypatch.undo()
    # Each written document's trace holds the version, when and the attempt; the failed one has none.
    at, attempt = stats.client.hget("sophia:trace:ev-1", "w:redis").decode().split("|")
    assert attempt == "3" and float(at) >= before - 0.001  # ms precision
    assert stats.client.hget("sophia:trace:ev-2", "w:redis") is None
    assert 0 < stats.client.ttl("sophia:trace:ev-1") <= Settings().dedupe_window_seconds
    counters = stats.counters()
    assert counters["documents_written|collection=gong_calls_enriched|target=redis"] == 2
    assert counters["lag_seconds_count|target=redis"] == 2  # the failed document has no lag
    assert stats.last_written()["redis"] >= before
    tick = sum(float(stats.client.get(k) or 0) for k in stats.client.keys("sophia:stats:tp:materialize:*"))
    assert tick == 2
    record_written(SimpleNamespace(stats=stats, settings=Settings(trace_enabled=False)), "redis",
                   "gong_calls_enriched", [failed], WriteResult(written=1), attempt=1)
    assert stats.client.hget("sophia:trace:ev-2", "w:redis") is None  # tracing off: nothing recorded


def test_record_takes_counters_ticks_and_gauges_together(stats: Stats, monkeypatch: pytest.MonkeyPatch) -> None:
    trips = count_round_trips(monkeypatch)
    stats.record([("documents_validated", {"collection": "c"}, 5)], {"validate": 5}, {"g|target=x": 1.5})
    stats.record([], {})  # nothing to say: no round trip at all
    assert trips == ["pipeline"]
    monkeypatch.undo()
    assert stats.counter("documents_validated", collection="c") == 5
    assert stats.gauges()["g|target=x"] == 1.5
    assert sum(float(stats.client.get(k) or 0) for k in stats.client.keys("sophia:stats:tp:validate:*")) == 5
