"""Alert rules from the numbers (pure), the alerts: section of the flow spec, and the beat entry."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from sophia_tasks.core.alert_rules import AlertsConfig, Thresholds, parse_alerts, parse_duration
from sophia_tasks.core.flowspec import FlowSpecError
from sophia_tasks.flows import load_spec, parse_spec
from sophia_tasks.observe.alerts import (
    Check,
    due,
    evaluate,
    firing_message,
    load_alerts_config,
    resolved_message,
)
from sophia_tasks.settings import DEFAULT_FLOW

TARGETS = ("redis", "postgres", "snowflake")
NOW = 1_800_000_000.0


def counters(**per_target: dict[str, Any]) -> dict[str, float]:
    """Raw stats fields for targets: written, errors, lags (a list of seconds, bucketed like pipeline)."""
    from sophia_tasks.observe.stats import LAG_BUCKETS

    out: dict[str, float] = {}
    for target, spec in per_target.items():
        out[f"documents_written|collection=gong_calls_enriched|target={target}"] = spec.get("written", 0)
        out[f"errors|reason=unreachable|stage=materialize|target={target}"] = spec.get("errors", 0)
        lags = spec.get("lags", [])
        out[f"lag_seconds_count|target={target}"] = len(lags)
        out[f"lag_seconds_sum|target={target}"] = sum(lags)
        for le in LAG_BUCKETS:
            out[f"lag_seconds_bucket|le={le}|target={target}"] = sum(1 for x in lags if x <= le)
    return out


def by_key(checks: list[Check]) -> dict[str, Check]:
    return {c.key: c for c in checks}


CONFIG = AlertsConfig(window=300, defaults=Thresholds(error_rate=0.1, min_errors=3, lag_p99=60, dead_letters=2,
                                                      stale_after=3600))


# -- evaluate ---------------------------------------------------------------------------------------
def test_without_a_baseline_rates_are_unknown() -> None:
    current = counters(redis={"written": 10, "errors": 50, "lags": [900] * 10})
    checks = by_key(evaluate(CONFIG, TARGETS, NOW, current, None, {}, {}))
    assert checks["error_rate:redis"].firing is None and checks["lag:redis"].firing is None
    assert checks["dead_letters:redis"].firing is False


def test_error_rate_over_the_window_for_the_failing_target_only() -> None:
    base = counters(redis={"written": 100}, postgres={"written": 100}, snowflake={"written": 100, "errors": 40})
    now = counters(redis={"written": 120}, postgres={"written": 120, "errors": 2},
                   snowflake={"written": 101, "errors": 49})
    checks = by_key(evaluate(CONFIG, TARGETS, NOW, now, base, {}, {}))
    # Old errors before the window do not count: 9 failed, 1 written in the window.
    assert checks["error_rate:snowflake"].firing is True and checks["error_rate:snowflake"].value == 0.9
    assert "90.0% of writes failed" in checks["error_rate:snowflake"].detail
    # 2 failures of 22 is 9%: below both the rate and the minimum count.
    assert checks["error_rate:postgres"].firing is False
    assert checks["error_rate:redis"].firing is False and checks["error_rate:redis"].value == 0


def test_error_rate_needs_min_errors() -> None:
    base = counters(redis={})
    now = counters(redis={"errors": 2})
    assert by_key(evaluate(CONFIG, ["redis"], NOW, now, base, {}, {}))["error_rate:redis"].firing is False


def test_counter_reset_does_not_fire() -> None:
    base = counters(redis={"written": 500, "errors": 400})
    now = counters(redis={"written": 3})
    assert by_key(evaluate(CONFIG, ["redis"], NOW, now, base, {}, {}))["error_rate:redis"].firing is False


def test_lag_p99_over_the_window() -> None:
    base = counters(redis={"lags": [0.1] * 50}, snowflake={"lags": [2000] * 5})
    now = counters(redis={"lags": [0.1] * 150}, snowflake={"lags": [2000] * 5 + [0.2] * 10 + [120] * 2})
    checks = by_key(evaluate(CONFIG, ["redis", "snowflake"], NOW, now, base, {}, {}))
    assert checks["lag:snowflake"].firing is True and checks["lag:snowflake"].value >= 60
    assert checks["lag:redis"].firing is False and checks["lag:redis"].value <= 0.1
    # A window without writes: no lag to speak of (staleness covers silence).
    quiet = by_key(evaluate(CONFIG, ["snowflake"], NOW, now, now, {}, {}))
    assert quiet["lag:snowflake"].firing is False and "no documents" in quiet["lag:snowflake"].detail


def test_dead_letters_per_target_and_pipeline() -> None:
    dead = {("materialize", "snowflake"): 2, ("materialize", "redis"): 1, ("validate", ""): 1}
    checks = by_key(evaluate(CONFIG, TARGETS, NOW, {}, {}, dead, {}))
    assert checks["dead_letters:snowflake"].firing is True
    assert checks["dead_letters:redis"].firing is False
    assert checks["dead_letters:pipeline"].firing is True
    unknown = by_key(evaluate(CONFIG, TARGETS, NOW, {}, {}, None, {}))
    assert unknown["dead_letters:snowflake"].firing is None and unknown["dead_letters:pipeline"].firing is None


def test_stale_binding() -> None:
    last = {"redis": NOW - 30, "postgres": NOW - 7200}
    checks = by_key(evaluate(CONFIG, TARGETS, NOW, {}, {}, {}, last))
    assert checks["stale:redis"].firing is False
    assert checks["stale:postgres"].firing is True and "2.0h" in checks["stale:postgres"].detail
    assert checks["stale:snowflake"].firing is False and checks["stale:snowflake"].detail == "never written yet"


def test_alerts_switched_off_are_not_evaluated() -> None:
    config = AlertsConfig(defaults=Thresholds(error_rate=None, lag_p99=None, dead_letters=None, stale_after=None),
                          targets={"redis": Thresholds(error_rate=None, lag_p99=None, dead_letters=None,
                                                       stale_after=60)}, pipeline_dead_letters=None,
                          reconcile_repaired=None)
    assert [c.key for c in evaluate(config, TARGETS, NOW, {}, {}, {}, {})] == ["stale:redis"]


def test_messages_name_state_kind_and_target() -> None:
    check = Check("lag", "snowflake", True, 900.0, 300.0, "p99 lag 15.0m over the last 5.0m")
    assert "FIRING lag on snowflake: p99 lag 15.0m" in firing_message("[sophia-tasks default]", check)
    text = resolved_message("[p]", check, "lag", "snowflake", NOW - 600, NOW)
    assert "RESOLVED lag on snowflake after 10.0m" in text


# -- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, seconds", [(90, 90.0), ("90s", 90.0), ("5m", 300.0), ("2h", 7200.0),
                                          ("1d", 86400.0), ("1.5h", 5400.0), ("off", None), (None, None)])
def test_parse_duration(raw: Any, seconds: float | None) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["soon", "-5m", 0, True, "5 weeks"])
def test_parse_duration_refuses(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


def test_targets_inherit_the_defaults() -> None:
    config, problems = parse_alerts({"window": "10m", "defaults": {"lag_p99": "2m", "stale_after": "1h"},
                                     "targets": {"snowflake": {"lag_p99": "30m", "dead_letters": "off"}}}, TARGETS)
    assert problems == []
    assert config.window == 600
    assert config.for_target("redis") == Thresholds(lag_p99=120, stale_after=3600)
    assert config.for_target("snowflake") == Thresholds(lag_p99=1800, stale_after=3600, dead_letters=None)


def test_every_problem_is_reported_at_once() -> None:
    _, problems = parse_alerts({"window": "x", "extra": 1, "defaults": {"error_rate": 5, "bogus": 1},
                                "targets": {"nowhere": {}}, "pipeline": {"dead_letters": 0}}, TARGETS)
    joined = "\n".join(problems)
    for needle in ("alerts.window", "alerts.extra", "alerts.defaults.error_rate", "alerts.defaults.bogus",
                   "alerts.targets.nowhere", "alerts.pipeline.dead_letters"):
        assert needle in joined


def test_flow_spec_validation_includes_the_alerts_section() -> None:
    data = yaml.safe_load(DEFAULT_FLOW.read_text(encoding="utf-8"))
    data["alerts"] = {"targets": {"bigquery": {"lag_p99": "5m"}}}
    with pytest.raises(FlowSpecError) as err:
        parse_spec(data, "flow.yaml", check_imports=False)
    assert "alerts.targets.bigquery: not a materialization of this spec" in str(err.value)


def test_shipped_spec_alerts() -> None:
    config = load_alerts_config(load_spec(DEFAULT_FLOW))
    assert config.window == 300
    assert config.for_target("redis").lag_p99 == 300 and config.for_target("snowflake").lag_p99 == 900
    assert all(config.for_target(t).stale_after == 72 * 3600 for t in TARGETS)
    assert config.pipeline_dead_letters == 1


def test_beat_runs_the_alerts_task() -> None:
    from sophia_tasks import app

    entry = app.conf.beat_schedule["alerts"]
    assert entry["task"] == "sophia.alerts" and entry["schedule"] == app.sophia_settings.alerts_interval_seconds
    assert "sophia.alerts" in app.tasks


# -- for (hold) and reconcile ------------------------------------------------------------------------
def test_a_condition_fires_only_after_it_held_for_its_for() -> None:
    config, problems = parse_alerts({"for": "2m", "targets": {"snowflake": {"for": "0s"}}}, TARGETS)
    assert problems == []
    assert config.hold("lag", "redis") == 120 and config.hold("lag", "snowflake") == 0
    assert config.hold("dead_letters", "pipeline") == 120 and config.hold("reconcile", "gong") == 0
    firing = [Check("lag", "redis", True, 400, 300, ""), Check("lag", "snowflake", True, 1000, 900, ""),
              Check("stale", "postgres", False, 1, 2, "")]
    assert due(config, firing, {}, NOW) == {"lag:snowflake"}          # first seen now: only for 0s is due
    assert due(config, firing, {"lag:redis": NOW - 119}, NOW) == {"lag:snowflake"}
    assert due(config, firing, {"lag:redis": NOW - 120}, NOW) == {"lag:redis", "lag:snowflake"}


def test_the_shipped_spec_holds_five_minutes_by_default() -> None:
    config = load_alerts_config(load_spec(DEFAULT_FLOW))
    assert config.for_seconds == 300 and config.hold("error_rate", "snowflake") == 300
    assert (config.reconcile_repaired, config.reconcile_window, config.reconcile_for) == (10, 3600, 0)


def test_bad_for_and_reconcile_values_are_reported() -> None:
    _config, problems = parse_alerts({"for": "soon", "defaults": {"for": -1},
                                      "reconcile": {"repaired": "many", "window": "x", "every": 3}}, TARGETS)
    text = "\n".join(problems)
    for where in ("alerts.for:", "alerts.defaults.for:", "alerts.reconcile.repaired:", "alerts.reconcile.window:",
                  "alerts.reconcile.every: unknown key"):
        assert where in text, problems


def test_reconcile_fires_above_the_threshold_over_its_window() -> None:
    config = AlertsConfig(defaults=Thresholds(error_rate=None, lag_p99=None, dead_letters=None),
                          pipeline_dead_letters=None, reconcile_repaired=3)
    base = {"reconciled|mode=enqueued|outcome=missing": 5.0, "reconciled|mode=dry_run|outcome=missing": 50.0}
    three = dict(base, **{"reconciled|mode=enqueued|outcome=missing": 7.0,
                          "reconciled|mode=enqueued|outcome=newer": 1.0,
                          "reconciled|mode=dry_run|outcome=missing": 90.0})
    check = by_key(evaluate(config, TARGETS, NOW, three, None, {}, {}, base))["reconcile:gong"]
    assert check.firing is False and check.value == 3      # dry runs never count; 3 is not more than 3
    four = dict(three, **{"reconciled|mode=enqueued|outcome=newer": 2.0})
    check = by_key(evaluate(config, TARGETS, NOW, four, None, {}, {}, base))["reconcile:gong"]
    assert check.firing is True and "enqueued 4 call(s)" in check.detail
    unknown = by_key(evaluate(config, TARGETS, NOW, four, None, {}, {}, None))["reconcile:gong"]
    assert unknown.firing is None
