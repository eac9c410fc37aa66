"""Paused bindings as operators see them: the alert, the error counts, the shared entries."""
from __future__ import annotations

import uuid

import pytest
import redis

from sophia_tasks.core.alert_rules import AlertsConfig, Thresholds
from sophia_tasks.observe import paused
from sophia_tasks.observe.alerts import evaluate
from sophia_tasks.observe.counts import target_counts

NOW = 1_800_000_000.0
CONFIG = AlertsConfig(window=300, defaults=Thresholds(error_rate=0.1, min_errors=3, lag_p99=None, dead_letters=None,
                                                      stale_after=None))


def test_a_paused_binding_fires_the_paused_alert_of_its_target_only() -> None:
    entries = [{"target": "snowflake", "collection": "calls", "since": NOW - 600, "seen": NOW,
                "reason": "snowflake table CALLS does not match the flow spec (column X (VARCHAR) is missing)"}]
    checks = {c.key: c for c in evaluate(CONFIG, ["postgres", "snowflake"], NOW, {}, {}, {}, {}, paused=entries)}
    fired = checks["paused:snowflake"]
    assert fired.firing is True and fired.value == 600.0
    assert "column X (VARCHAR) is missing" in fired.detail and "flows apply" in fired.detail
    assert "paused:postgres" not in checks, "a target with nothing paused adds no check"


def test_without_paused_information_no_paused_check_is_made() -> None:
    checks = evaluate(CONFIG, ["postgres"], NOW, {}, {}, {}, {})
    assert not [c for c in checks if c.kind == "paused"]


def test_paused_documents_are_counted_but_are_not_write_errors() -> None:
    counters = {"errors|reason=paused|stage=materialize|target=postgres": 40.0,
                "errors|reason=data|stage=materialize|target=postgres": 1.0}
    t = target_counts(counters)["postgres"]
    assert t["errors"] == 1.0, "held documents must not fire the error-rate alert"
    assert t["errors_by_reason"] == {"paused": 40.0, "data": 1.0}


def test_entries_keep_their_start_and_go_stale_once_nobody_reports_them(monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/12")  # a real Redis, as the stats tests; a key of its own
    monkeypatch.setattr(paused, "KEY", f"test:paused:{uuid.uuid4().hex}")
    assert paused.mark(client, "pg", "calls", "why", 10, now=NOW) == NOW
    assert paused.mark(client, "pg", "calls", "why", 5, now=NOW + 30) == NOW
    (entry,) = paused.paused_bindings(client, now=NOW + 31)
    assert (entry["since"], entry["seen"], entry["documents"]) == (NOW, NOW + 30, 5)
    assert paused.paused_bindings(client, now=NOW + 30 + paused.FRESH_SECONDS + 1) == []
    paused.clear(client, "pg", "calls")
    assert paused.paused_bindings(client, now=NOW + 31) == []
    assert not client.exists(paused.KEY)
