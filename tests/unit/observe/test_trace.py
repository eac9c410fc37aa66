"""The trace: what each stage records (one Lua call per batch, a real Redis in a scratch database) and
how the reader joins it with the journal and the dead letters."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import redis

from sophia_tasks.flows import load_spec
from sophia_tasks.observe import trace
from sophia_tasks.observe.stats import Stats
from sophia_tasks.pipeline import stages
from sophia_tasks.settings import Settings

URL = "redis://127.0.0.1:6379/12"
SPEC = load_spec(Settings().flow_path)


def gong_event(event_id: str, call_id: str, valid: bool = True) -> dict[str, Any]:
    meta = {"id": call_id, "title": "Acme", "started": "2026-11-20T15:00:00-05:00", "duration": 60}
    if not valid:
        meta["duration"] = "long"
    return {"event_id": event_id, "collection": "gong_calls", "received_at": "2026-12-03T08:00:00.000000Z",
            "published_at": "2026-12-03T08:00:00.000000Z", "source": "webhook", "is_test": False,
            "document": {"metaData": meta}}


def fields(client: redis.Redis, event_id: str) -> dict[str, str]:
    return trace.read_fields(client, event_id)


def test_validate_and_derive_record_a_batch_in_one_call_and_index_the_key() -> None:
    stats = Stats(URL)
    good, bad = f"ev-{uuid.uuid4().hex}", f"ev-{uuid.uuid4().hex}"
    call_id = str(uuid.uuid4().int % 10**18)
    result = stages.validate_events(SPEC, [gong_event(good, call_id), gong_event(bad, call_id, valid=False)])
    assert len(result.letters) == 1
    stats.record([], {}, trace=trace.validated(Settings(), SPEC, result, "task-1", "sophia:events:q:7"))
    derived = stages.derive_documents(SPEC, "gong_calls", result.documents["gong_calls"])
    stats.record([], {}, trace=trace.derived(Settings(), derived))
    try:
        ok = fields(stats.client, good)
        assert "valid" not in ok and "derive" not in ok  # only a result that is not ok is spelt out
        assert ok["batch"] == "task-1" and ok["cut"] == "q:7" and ok["key"] == call_id
        assert ok["version"] == "2026-12-03T08:00:00.000000Z"
        assert float(ok["derived"]) >= float(ok["validated"])
        assert fields(stats.client, bad)["valid"] == "invalid"
        assert [i.decode() for i in stats.client.zrange(trace.KEY_INDEX + call_id, 0, -1)] == [good]
        # An event that never passed the web (backfill) gets the window as its expiry from its first stage.
        assert 0 < stats.client.ttl(trace.PREFIX + good) <= Settings().dedupe_window_seconds
        assert 0 < stats.client.ttl(trace.KEY_INDEX + call_id) <= Settings().dedupe_window_seconds
    finally:
        stats.client.delete(trace.PREFIX + good, trace.PREFIX + bad, trace.KEY_INDEX + call_id)


def test_the_web_expiry_is_kept_by_later_stages() -> None:
    stats = Stats(URL)
    event_id = f"ev-{uuid.uuid4().hex}"
    stats.client.hset(trace.PREFIX + event_id, "received", "x")
    stats.client.expire(trace.PREFIX + event_id, 50)
    batch = trace.TraceBatch(86400)
    batch.add(event_id, ["w:redis", "1796284800.350"])
    stats.record([], {}, trace=batch)
    try:
        assert 0 < stats.client.ttl(trace.PREFIX + event_id) <= 50
    finally:
        stats.client.delete(trace.PREFIX + event_id)


def letter(letter_id: int, stage: str, target: str | None, error: str, details: Any = None) -> Any:
    return SimpleNamespace(id=letter_id, stage=stage, target=target, error=error, details=details, attempts=5,
                           status="pending", created_at=datetime(2026, 12, 3, 8, 0, 5, tzinfo=timezone.utc))


def test_an_event_trace_joins_stages_targets_and_dead_letters() -> None:
    f = {"received": "2026-12-03T08:00:00.000000Z", "source": "webhook", "credential": "bearer:0123abcd",
         "duplicates": "1", "duplicate_at": "1796284800.5", "validated": "1796284800.250", "batch": "task-1",
         "cut": "q:1", "key": "42", "version": "2026-12-03T07:59:00.000000Z", "derived": "1796284800.300",
         "w:redis": "1796284800.350",
         "f:postgres": "1796284800.400|5|unreachable|dead-lettered",
         "f:snowflake": "1796284800.400|1|unreachable|retry",
         "w:snowflake": "1796284803.300|2"}
    journal = [{"collection": "gong_calls", "received_at": datetime(2026, 12, 3, 8, tzinfo=timezone.utc),
                "journaled_at": None, "lane": "live", "source": "webhook", "published_at": None, "event": {}}]
    got = trace.build_event_trace(SPEC, "ev-1", f, journal, [letter(9, "materialize", "postgres", "locked")])
    assert got is not None
    assert got["received"] == {"at": "2026-12-03T08:00:00.000Z", "source": "webhook", "credential": "bearer:0123abcd",
                               "lane": "live"}
    assert got["collection"] == "gong_calls" and got["version"] == "2026-12-03T07:59:00.000000Z"
    assert got["dedupe"]["duplicates"] == 1 and got["dedupe"]["last_duplicate_at"].startswith("2026-12-03T08:00:00.5")
    assert got["validate"]["result"] == "ok" and got["validate"]["took_s"] == 0.25
    assert got["derive"]["result"] == "ok"
    assert got["derive"]["took_s"] == 0.05
    redis_t, pg, sf = got["targets"]["redis"], got["targets"]["postgres"], got["targets"]["snowflake"]
    assert redis_t["status"] == "written" and redis_t["version"] == "2026-12-03T07:59:00.000000Z"
    assert got["batch"] == {"validate_task": "task-1", "cut": "sophia:events:q:1"}
    assert redis_t["attempts"] == 1 and redis_t["took_s"] == 0.05
    assert pg["status"] == "dead-lettered" and pg["dead_letter"]["id"] == 9 and pg["attempts"] == 5
    assert sf["status"] == "written" and sf["attempts"] == 2 and sf["last_failure"]["then"] == "retry"


def test_an_invalid_event_shows_its_dead_letter_and_no_target_write() -> None:
    f = {"received": "2026-12-03T08:00:00.000000Z", "validated": "1796284800.250", "valid": "invalid"}
    errors = {"metaData": {"duration": ["Not a valid integer."]}}
    got = trace.build_event_trace(SPEC, "ev-2", f, [], [letter(3, "validate", None, "schema gong_call", errors)])
    assert got is not None
    assert got["validate"]["result"] == "invalid" and got["validate"]["dead_letter"]["details"] == errors
    assert got["derive"]["result"] == "skipped"
    assert got["collection"] is None or all(t["status"] == "not sent" for t in got["targets"].values())


def test_nothing_known_is_no_trace_and_the_answer_says_how_far_back_traces_go() -> None:
    assert trace.build_event_trace(SPEC, "nope", {}, [], []) is None
    message = trace.not_found_message(Settings(), "event 'nope'")
    assert "traces go back 24 h" in message and "SOPHIA_DEDUPE_WINDOW_SECONDS=86400" in message
    assert "90 s" in trace.window_text(Settings(dedupe_window_seconds=90))


def test_tracing_off_builds_nothing() -> None:
    off = Settings(trace_enabled=False)
    result = stages.validate_events(SPEC, [gong_event("e", "1")])
    assert trace.validated(off, SPEC, result, "t", None) is None
    assert trace.written(off, "redis", [], set(), 1) is None


def test_a_failed_write_records_whether_it_is_retried_or_dead_lettered() -> None:
    stats = Stats(URL)
    retried, keyless = f"ev-{uuid.uuid4().hex}", f"ev-{uuid.uuid4().hex}"
    stats.record([], {}, trace=trace.failed(Settings(), "postgres", [{"_meta": {"event_id": retried}}],
                                            [{"_meta": {"event_id": keyless}}], 2, "unreachable", True))
    try:
        at, attempt, reason, then = fields(stats.client, retried)["f:postgres"].split("|")
        assert (attempt, reason, then) == ("2", "unreachable", "retry") and float(at) > 0
        assert fields(stats.client, keyless)["f:postgres"].endswith("|dead-lettered")
    finally:
        stats.client.delete(trace.PREFIX + retried, trace.PREFIX + keyless)
