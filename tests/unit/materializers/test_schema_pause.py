"""A binding whose table does not match the spec pauses: drift, the short cache, and the error it raises."""
from __future__ import annotations

import time

import pytest

from sophia_tasks.materializers.schema import (
    CHECK_OK_SECONDS,
    CHECK_PAUSED_SECONDS,
    BindingPaused,
    Drift,
    TableChecks,
    table_drift,
)
from sophia_tasks.pipeline.fanout import PAUSE_RECHECK_MAX, PAUSE_RECHECK_MIN, pause_countdown
from sophia_tasks.pipeline.stages import write_isolating


def test_drift_finds_missing_and_retyped_columns_in_spec_order() -> None:
    drift = table_drift({"k": "text", "a": "text", "b": "bigint"}, {"k": "text", "b": "text"}, ("k",))
    assert drift == [Drift("missing_column", "a", "text"), Drift("type_change", "b", "bigint", "text")]
    assert table_drift({"k": "text"}, {"b": "text"}, ("k",))[0].required


def test_paused_verdict_is_cached_briefly_and_a_match_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = TableChecks()
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    checks.remember("t", [Drift("missing_column", "a", "text")])
    checks.remember("ok", [])
    assert checks.cached("t") and checks.cached("ok") == []
    now[0] += CHECK_PAUSED_SECONDS + 0.1
    assert checks.cached("t") is None, "a paused binding looks again within seconds (resumes after apply)"
    assert checks.cached("ok") == []
    now[0] += CHECK_OK_SECONDS
    assert checks.cached("ok") is None


def test_paused_error_tells_the_operator_what_to_run() -> None:
    exc = BindingPaused("snowflake", "CALLS", [Drift("missing_column", "SCORE", "FLOAT")])
    assert "column SCORE (FLOAT) is missing" in str(exc)
    assert "sophia-tasks flows apply" in str(exc)


def test_a_paused_batch_is_never_split_like_a_poison_document() -> None:
    calls = []

    def write(docs: list[dict]) -> None:
        calls.append(len(docs))
        raise BindingPaused("postgres", "t", [Drift("missing_column", "a", "text")])

    with pytest.raises(BindingPaused):
        write_isolating(write, [{"i": i} for i in range(8)])  # type: ignore[arg-type]
    assert calls == [8]


def test_pause_recheck_grows_with_the_pause_and_stays_bounded() -> None:
    assert pause_countdown(0) == PAUSE_RECHECK_MIN
    assert pause_countdown(200) == 20.0
    assert pause_countdown(10 * 3600) == PAUSE_RECHECK_MAX


def test_a_paused_batch_is_resent_with_the_same_attempt_under_a_fresh_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from sophia_tasks.pipeline import fanout

    sent: list[dict] = []
    claims: list[tuple] = []
    errors: list[tuple] = []
    marked: list[tuple] = []
    monkeypatch.setattr(fanout, "send_materialize", lambda *a, **k: sent.append({"args": a, **k}))
    monkeypatch.setattr(fanout, "claim_check", lambda ctx, docs, targets, name=None: claims.append(
        (len(docs), targets, name)) or {"$batch": name})
    monkeypatch.setattr(fanout, "record_error", lambda ctx, stage, target, reason, n: errors.append((reason, n)))
    monkeypatch.setattr(fanout.paused_bindings, "mark", lambda client, t, c, reason, n, now: marked.append(
        (t, c, n)) or now - 600)  # paused for 10 minutes already: the wait grows, within the claim's expiry
    monkeypatch.setattr(fanout, "_paused_since", {})
    ctx = SimpleNamespace(settings=SimpleNamespace(batch_ttl_seconds=100), stats=SimpleNamespace(client=None))
    exc = BindingPaused("postgres", "t", [Drift("missing_column", "a", "text")])
    fanout.hold_paused(ctx, "pg", "calls", [{"i": 1}, {"i": 2}], 4, "bulk", "task-1", exc)  # type: ignore[arg-type]
    assert claims == [(2, ["pg"], "task-1:paused")]
    (msg,) = sent
    assert msg["args"] == ("pg", "calls", {"$batch": "task-1:paused"})
    assert msg["attempt"] == 4, "a pause never uses up the retry budget"
    assert msg["lane"] == "bulk"
    assert msg["countdown"] == 50.0, "a tenth of the pause (60 s), but within half the claim check's expiry"
    assert errors == [("paused", 2)] and marked == [("pg", "calls", 2)]
