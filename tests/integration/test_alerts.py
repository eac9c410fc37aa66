"""Slack alerts against a local stand-in: a failing target fires once, stays quiet while firing, resolves.

The window logic runs on the clock each evaluation is given (``run_checks(now=...)``), so the test
moves its clock forward instead of sleeping through real windows; the counters, the broker, the
dead-letter store and Slack are all real (Slack is a local HTTP server).
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from sophia_tasks.observe.alerts import PENDING_KEY, SNAPSHOTS_KEY, STATE_KEY, run_checks
from sophia_tasks.settings import DEFAULT_FLOW
from tests.integration.conftest import Harness, gong_call
from tests.integration.test_metrics import ObsStack, obs, quiesce, spec_of  # noqa: F401 (fixture)


class SlackStandIn:
    def __init__(self) -> None:
        self.messages: list[str] = []
        messages = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages.append(body["text"])
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, state: str, kind: str, target: str) -> list[str]:
        return [m for m in self.messages if f" {state} {kind} on {target}" in m]


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn()
    try:
        yield stand_in
    finally:
        stand_in.server.shutdown()
        stand_in.server.server_close()


def _spec_with_alerts(tmp_path: Path, alerts: dict[str, Any]) -> Path:
    data = yaml.safe_load(DEFAULT_FLOW.read_text(encoding="utf-8"))
    data["alerts"] = alerts
    for collection in data["collections"].values():  # JSON Schema files are relative to the spec: keep them found
        if isinstance(collection["schema"], str) and collection["schema"].endswith(".json"):
            collection["schema"] = str(DEFAULT_FLOW.parent / collection["schema"])
    path = tmp_path / "flow-with-alerts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _reset_alerts(o: ObsStack) -> None:
    o.cache.delete(STATE_KEY, SNAPSHOTS_KEY, PENDING_KEY)


def envelope(call: dict[str, Any]) -> dict[str, Any]:
    return {"type": "call_completed", "data": call}


def test_failing_target_alerts_once_then_resolves(harness: Harness, obs: ObsStack,  # noqa: F811
                                                  slack: SlackStandIn, tmp_path: Path) -> None:
    flow = _spec_with_alerts(tmp_path, {
        "window": "5s",
        "for": "0s",
        "reconcile": {"repaired": "off"},
        "defaults": {"error_rate": 0.5, "min_errors": 1, "lag_p99": "6s", "dead_letters": "off",
                     "stale_after": "off"},
        "pipeline": {"dead_letters": "off"},
    })
    env = {"SOPHIA_FLOW": str(flow), "SOPHIA_SLACK_WEBHOOK_URL": slack.url}
    settings = obs.settings(**env)
    spec = spec_of(settings)
    quiesce(obs)
    _reset_alerts(obs)
    try:
        # On demand from the command line: the first evaluation has nothing to compare with yet.
        out = obs.cli("alerts", "check", "--json", **env)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["baseline"] is False and report["fired"] == [] and report["slack"] == "configured"
        t0 = time.time()
        errors_before = {t: obs.counter("errors", stage="materialize", target=t, reason="unreachable")
                         for t in spec.materializations}

        obs.stop_snowflake()
        try:
            calls = [gong_call() for _ in range(2)]
            assert obs.post([envelope(c) for c in calls]).status_code == 202
            harness.wait(lambda: obs.counter("errors", stage="materialize", target="snowflake",
                                                 reason="unreachable") >= errors_before["snowflake"] + 2,
                         30, "snowflake's first failed attempt")
            harness.wait(lambda: all(obs.redis_doc(c["metaData"]["id"]) and harness.pg_rows(c["metaData"]["id"])
                                     for c in calls), 20, "the calls in redis and postgres")
            fired = run_checks(settings, spec, now=t0 + 10)
            assert fired["fired"] == ["error_rate:snowflake"], fired
            again = run_checks(settings, spec, now=t0 + 11)  # still failing: no second message
            assert again["fired"] == [] and "error_rate:snowflake" in again["firing"]
            time.sleep(5)  # keep the outage long enough that snowflake's lag passes 6 s
        finally:
            obs.start_snowflake()
        for c in calls:
            harness.wait(lambda c=c: obs.targets.sf_rows(c["metaData"]["id"]), 60,
                         "the calls in snowflake after recovery")
        quiesce(obs)

        # The failure raised the error counter and the lag of snowflake alone.
        for t in ("redis", "postgres"):
            assert obs.counter("errors", stage="materialize", target=t, reason="unreachable") == errors_before[t]
        late = run_checks(settings, spec, now=t0 + 12)
        lag = {c["target"]: c for c in late["checks"] if c["kind"] == "lag"}
        assert lag["snowflake"]["firing"] is True and lag["snowflake"]["value"] >= 6
        assert lag["redis"]["firing"] is False and lag["postgres"]["firing"] is False
        assert late["fired"] == ["lag:snowflake"]

        cleared = run_checks(settings, spec, now=t0 + 20)  # a window with no failure and no late write
        assert sorted(cleared["resolved"]) == ["error_rate:snowflake", "lag:snowflake"], cleared
        assert cleared["firing"] == []
        assert run_checks(settings, spec, now=t0 + 21)["resolved"] == []

        assert len(slack.about("FIRING", "error_rate", "snowflake")) == 1
        assert len(slack.about("RESOLVED", "error_rate", "snowflake")) == 1
        assert len(slack.about("FIRING", "lag", "snowflake")) == 1
        assert len(slack.about("RESOLVED", "lag", "snowflake")) == 1
        assert len(slack.messages) == 4, slack.messages
        assert not [m for m in slack.messages if " on redis" in m or " on postgres" in m]
    finally:
        _reset_alerts(obs)


def test_stale_binding_alerts_once_and_resolves_on_the_next_write(harness: Harness, obs: ObsStack,  # noqa: F811
                                                                    slack: SlackStandIn, tmp_path: Path) -> None:
    flow = _spec_with_alerts(tmp_path, {
        "defaults": {"error_rate": "off", "lag_p99": "off", "dead_letters": "off", "stale_after": "off"},
        "targets": {"postgres": {"stale_after": "30s", "for": "60s"}},
        "reconcile": {"repaired": "off"},
        "pipeline": {"dead_letters": "off"},
    })
    settings = obs.settings(SOPHIA_FLOW=str(flow), SOPHIA_SLACK_WEBHOOK_URL=slack.url)
    spec = spec_of(settings)
    _reset_alerts(obs)
    try:
        call = gong_call()
        assert obs.post(envelope(call)).status_code == 202
        harness.wait(lambda: harness.pg_rows(call["metaData"]["id"]), 30, "the call in postgres")
        assert run_checks(settings, spec)["fired"] == []
        later = time.time() + 120  # two minutes without a write to postgres
        # Stale, but not yet for the 60 s its `for` asks: nothing sent, the condition is pending.
        held = run_checks(settings, spec, now=later)
        assert held["fired"] == [] and held["firing"] == []
        assert held["checks"][0]["pending_since"] == later and held["checks"][0]["for_seconds"] == 60
        assert run_checks(settings, spec, now=later + 59)["fired"] == []
        assert run_checks(settings, spec, now=later + 60)["fired"] == ["stale:postgres"]
        assert run_checks(settings, spec, now=later + 61)["fired"] == []
        assert [c["key"] for c in run_checks(settings, spec, now=later)["checks"]] == ["stale:postgres"]
        # Back on the real clock the last write is recent again: resolved.
        assert run_checks(settings, spec)["resolved"] == ["stale:postgres"]
        assert len(slack.about("FIRING", "stale", "postgres")) == 1
        assert len(slack.about("RESOLVED", "stale", "postgres")) == 1
        assert len(slack.messages) == 2
    finally:
        _reset_alerts(obs)
