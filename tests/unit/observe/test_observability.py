"""Sentry scrubbing and init, and the /metrics exposition built from fake sources."""
from __future__ import annotations

import gzip
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sophia_tasks.observe.sentry import FILTERED, Scrubber, init_sentry, secret_values, should_report_retry
from sophia_tasks.settings import Settings, SnowflakeSettings, load_settings

TOKEN = "tok-" + "a1b2c3d4e5f6a7b8"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _settings(**changes: Any) -> Settings:
    return Settings(webhook_tokens=(TOKEN,), webhook_secrets=(SECRET,), **changes)


# -- scrubbing -------------------------------------------------------------------------------
def test_secret_values_cover_tokens_secrets_and_url_passwords() -> None:
    settings = _settings(postgres_dsn="postgresql://app:pg-pass-123@db:5432/sophia",
                         broker_url="redis://:broker-pass-9@127.0.0.1:6379/0",
                         slack_webhook_url="https://hooks.slack.com/services/T0/B0/xyz123",
                         snowflake=SnowflakeSettings(account="acct", user="u", password="sf-password-1",
                                                     database="D", schema="S", warehouse=None, role=None,
                                                     host="h", port=443, protocol="https"))
    values = secret_values(settings)
    for expected in (TOKEN, SECRET, SECRET.removeprefix("whsec_"), "pg-pass-123", "broker-pass-9",
                     "sf-password-1", "https://hooks.slack.com/services/T0/B0/xyz123"):
        assert expected in values
    # The emulator's default password is a common word: replacing it would mangle module names.
    assert "sophia" not in secret_values(Settings())


@pytest.mark.parametrize("text, gone, kept", [
    (f"Authorization: Bearer {TOKEN}", [TOKEN], ["Authorization: Bearer"]),
    ("Bearer abcdefgh12345678zz rejected", ["abcdefgh12345678zz"], ["rejected"]),
    (f"secret {SECRET} used", [SECRET, SECRET.removeprefix("whsec_")], ["used"]),
    ("connect postgresql://app:hunter2hunter@db/x failed", ["hunter2hunter"], ["postgresql://app:", "@db/x"]),
    ("post to https://hooks.slack.com/services/T000/B000/XXXX failed", ["T000/B000/XXXX"], ["failed"]),
    ("jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl bad", ["eyJhbGciOiJSUzI1NiJ9"], ["bad"]),
    ("call with carl@acme.com at +1 415 555 0199", ["carl@", "415 555 0199"], ["***@acme.com", "call with"]),
    ("sophia_tasks/pipeline.py line 203 at 2026-11-20T20:00:00Z", [], ["sophia_tasks/pipeline.py line 203",
                                                                      "2026-11-20T20:00:00Z"]),
])
def test_text_scrubbing(text: str, gone: list[str], kept: list[str]) -> None:
    out = Scrubber([TOKEN, SECRET]).text(text)
    for g in gone:
        assert g not in out, out
    for k in kept:
        assert k in out, out


def test_event_scrubbing_covers_request_frames_extra_and_breadcrumbs() -> None:
    event = {
        "message": f"failed for carl@acme.com with {TOKEN}",
        "request": {"url": "http://x/estuary/webhook", "method": "POST",
                    "headers": {"Authorization": f"Bearer {TOKEN}", "webhook-signature": "v1,abc",
                                "Content-Type": "application/json", "X-Api-Key": "k-123456"},
                    "data": {"callData": {"parties": [{"emailAddress": "carl@acme.com"}]}},
                    "cookies": {"session": "s"}, "query_string": f"token={TOKEN}"},
        "exception": {"values": [{"type": "KeyError", "value": f"'nope {TOKEN} carl@acme.com'",
                                  "stacktrace": {"frames": [{"function": "materialize", "vars": {
                                      "documents": [{"emailAddress": "carl@acme.com"}],
                                      "target": f"nope {TOKEN}", "attempt": 1, "password": "pw-123456",
                                      "settings": f"Settings(webhook_tokens=('{TOKEN}',))"}}]}}]},
        "extra": {"celery-job": {"task_name": "sophia.materialize", "args": ["redis", [{"a": "b"}]],
                                 "kwargs": {}}},
        "breadcrumbs": {"values": [{"message": "test delivery for +1 (415) 555-0132", "category": "log"}]},
        "tags": {"celery_task_name": "sophia.materialize"},
    }
    out = Scrubber([TOKEN]).event(event)
    dumped = json.dumps(out)
    for leaked in (TOKEN, "carl@acme.com", "555-0132", "pw-123456", "k-123456", "v1,abc"):
        assert leaked not in dumped, leaked
    req = out["request"]
    assert req["data"] == FILTERED and "cookies" not in req
    assert req["headers"]["Authorization"] == FILTERED and req["headers"]["webhook-signature"] == FILTERED
    assert req["headers"]["Content-Type"] == "application/json"
    frame_vars = out["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]
    assert frame_vars["documents"] == FILTERED and frame_vars["attempt"] == 1
    assert frame_vars["target"] == f"nope {FILTERED}"
    assert out["extra"]["celery-job"] == {"task_name": "sophia.materialize", "args": FILTERED, "kwargs": FILTERED}
    assert out["exception"]["values"][0]["value"] == f"'nope {FILTERED} ***@acme.com'"
    assert out["tags"] == {"celery_task_name": "sophia.materialize"}


def test_scrubber_failure_sends_a_bare_event() -> None:
    class Boom(dict):
        def get(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("bug")

    out = Scrubber().event(Boom(message=f"secret {TOKEN}"))
    assert TOKEN not in json.dumps(out)


def test_retries_are_reported_at_powers_of_two() -> None:
    reported = [n + 1 for n in range(40) if should_report_retry(n)]
    assert reported == [1, 2, 4, 8, 16, 32]


def test_no_dsn_no_sentry() -> None:
    assert init_sentry(Settings(), "web") is False


# -- sentry end to end in-process: the web app -------------------------------------------------
class _StandIn:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                bodies.append(raw)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stand_in() -> Iterator[_StandIn]:
    import sentry_sdk

    server = _StandIn()
    try:
        yield server
    finally:
        sentry_sdk.get_client().close(timeout=2)
        sentry_sdk.init(dsn=None)  # leave the test process without a client
        server.server.shutdown()
        server.server.server_close()


def test_web_app_reports_errors_scrubbed(stand_in: _StandIn) -> None:
    from web import create_app

    settings = load_settings({"SOPHIA_WEBHOOK_TOKENS": TOKEN, "SOPHIA_WEBHOOK_SECRET": SECRET,
                              "SENTRY_DSN": f"http://public@127.0.0.1:{stand_in.port}/1",
                              "SENTRY_ENVIRONMENT": "unit"})
    app = create_app(settings)

    @app.post("/boom")
    def boom() -> Any:
        email = "carl@acme.com"  # a local variable Sentry would otherwise capture
        raise RuntimeError(f"cannot handle {email} from Bearer {TOKEN}")

    resp = app.test_client().post("/boom", data=json.dumps({"callData": {"emailAddress": "rita@x.example"}}),
                                  headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert resp.status_code == 500
    import sentry_sdk

    sentry_sdk.flush(timeout=5)
    deadline = time.monotonic() + 5
    while not stand_in.bodies and time.monotonic() < deadline:
        time.sleep(0.05)
    everything = b"\n".join(stand_in.bodies).decode()
    assert "RuntimeError" in everything and "cannot handle ***@acme.com" in everything
    for leaked in (TOKEN, "carl@acme.com", "rita@x.example"):
        assert leaked not in everything, leaked
    assert '"component":"web"' in everything.replace(" ", "")


# -- /metrics from fake sources ----------------------------------------------------------------
class _FakeStats:
    def __init__(self, counters: dict[str, float]) -> None:
        self._counters = counters
        self.client = None

    def counters(self) -> dict[str, float]:
        return self._counters

    def throughput_all(self) -> dict[str, float]:
        return {"capture": 2.0, "validate": 2.0, "derive": 2.0, "materialize": 1.5}

    def gauges(self) -> dict[str, float]:
        return {"last_written|target=redis": 1_700_000_000.0}


def _render(monkeypatch: pytest.MonkeyPatch, counters: dict[str, float], snapshot: Any,
            dead: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    import sophia_tasks.observe.alerts as alerts
    import sophia_tasks.observe.counts as status
    import sophia_tasks.observe.queues as queues
    import web.metrics as metrics
    from sophia_tasks.flows import load_spec

    monkeypatch.setattr(metrics, "_stats_for", lambda url: _FakeStats(counters))
    monkeypatch.setattr(alerts, "firing_alerts", lambda client: [{"kind": "lag", "target": "snowflake"}])
    import sophia_tasks.observe.paused as paused

    monkeypatch.setattr(paused, "paused_bindings", lambda client: [
        {"target": "snowflake", "collection": "gong_calls_enriched", "since": 1.0, "seen": 2.0, "reason": "r"}])
    import sophia_tasks.observe.workers as workers

    monkeypatch.setattr(workers, "read_workers", lambda client, settings: [
        {"node": "celery@a", "seen_age_s": 1.0, "consumed_age_s": 0.5, "active": 1, "concurrency": 6},
        {"node": "celery@b", "seen_age_s": 1.0, "consumed_age_s": None, "active": 0, "concurrency": 6}])
    monkeypatch.setattr(queues, "broker_snapshot", snapshot)
    monkeypatch.setattr(status, "pending_dead_letters", dead)
    settings = Settings()

    class Svc:
        pass

    svc = Svc()
    svc.settings = settings  # type: ignore[attr-defined]
    svc.spec = load_spec(settings.flow_path)  # type: ignore[attr-defined]
    body, content_type = metrics.render(svc)
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_metrics_exposition(monkeypatch: pytest.MonkeyPatch) -> None:
    from sophia_tasks.observe.queues import BrokerSnapshot, QueueInfo

    counters = {
        "lag_seconds_bucket|le=0.5|target=redis": 2.0, "lag_seconds_bucket|le=1.0|target=redis": 3.0,
        "lag_seconds_bucket|le=2.0|target=redis": 3.0, "lag_seconds_count|target=redis": 3.0,
        "lag_seconds_sum|target=redis": 1.7,
        "documents_written|collection=gong_calls_enriched|target=redis": 3.0,
        "batches_written|collection=gong_calls_enriched|target=redis": 1.0,
        "errors|reason=unreachable|stage=materialize|target=snowflake": 4.0,
        "errors|reason=schema|stage=validate|target=": 1.0,
        "events_accepted|collection=gong_calls": 4.0,
    }

    def snapshot(settings: Any, spec: Any) -> BrokerSnapshot:
        return BrokerSnapshot(queues={
            "sophia.materialize.snowflake": QueueInfo("sophia.materialize.snowflake", "snowflake", "live", 2, 1,
                                                      1000.0, 500.0),
            "sophia.backfill.materialize.snowflake": QueueInfo("sophia.backfill.materialize.snowflake",
                                                               "snowflake", "bulk", 1, 0, 250.0, 0.0)},
            backlog={"snowflake": (3, 5000), "postgres": (2, 4000), "redis": (0, 0)})

    got = _render(monkeypatch, counters, snapshot, lambda s: {("materialize", "snowflake"): 2, ("validate", ""): 1})
    assert got[_key("estuary_flow_lag_seconds_bucket", target="redis", le="0.5")] == 2
    assert got[_key("estuary_flow_lag_seconds_bucket", target="redis", le="1.0")] == 3
    assert got[_key("estuary_flow_lag_seconds_bucket", target="redis", le="+Inf")] == 3
    assert got[_key("estuary_flow_lag_seconds_count", target="postgres")] == 0
    assert got[_key("sophia_workers_live")] == 2
    assert got[_key("sophia_worker_consumed_age_seconds", node="celery@a")] == 0.5
    assert _key("sophia_worker_consumed_age_seconds", node="celery@b") not in got
    assert got[_key("estuary_flow_errors_total", stage="materialize", target="snowflake", reason="unreachable")] == 4
    assert got[_key("estuary_flow_errors_total", stage="materialize", target="redis", reason="data")] == 0
    assert got[_key("estuary_flow_errors_total", stage="materialize", target="postgres", reason="paused")] == 0
    assert got[_key("sophia_binding_paused", target="snowflake", collection="gong_calls_enriched")] == 1
    assert got[_key("estuary_flow_errors_total", stage="validate", target="", reason="schema")] == 1
    assert got[_key("sophia_documents_written_total", target="redis", collection="gong_calls_enriched")] == 3
    assert got[_key("sophia_documents_written_total", target="postgres", collection="gong_calls_enriched")] == 0
    assert got[_key("sophia_events_accepted_total", collection="gong_calls")] == 4
    assert got[_key("estuary_flow_throughput_eps", stage="materialize")] == 1.5
    # The documents waiting in stored batches and buffers, plus the task messages (here 1,750 bytes).
    assert got[_key("estuary_materialization_lag_bytes", target="snowflake")] == 1750 + 5000
    assert got[_key("estuary_materialization_lag_bytes", target="postgres")] == 4000
    assert got[_key("estuary_materialization_lag_bytes", target="redis")] == 0
    assert got[_key("sophia_materialization_lag_documents", target="snowflake")] == 3
    assert got[_key("sophia_materialization_lag_documents", target="postgres")] == 2
    assert got[_key("sophia_materialization_lag_documents", target="redis")] == 0
    assert got[_key("sophia_queue_length", queue="sophia.backfill.materialize.snowflake")] == 1
    assert got[_key("sophia_queue_reserved", queue="sophia.materialize.snowflake")] == 1
    assert got[_key("sophia_dead_letters")] == 3
    assert got[_key("sophia_dead_letters_pending", stage="materialize", target="redis")] == 0
    assert got[_key("sophia_last_written_timestamp_seconds", target="redis")] == 1_700_000_000
    assert got[_key("sophia_alert_firing", alert="lag", target="snowflake")] == 1
    assert got[_key("sophia_metrics_source_up", source="broker")] == 1


def test_metrics_when_sources_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """AMQP cannot tell bytes (NaN, not a fake zero); a store that is down drops its families."""
    from sophia_tasks.observe.queues import BrokerSnapshot, QueueInfo

    def amqp(settings: Any, spec: Any) -> BrokerSnapshot:
        return BrokerSnapshot(queues={"sophia.ingest": QueueInfo("sophia.ingest", None, "live", 5)},
                              measured_bytes=False)

    def down(settings: Any) -> Any:
        raise OSError("connection refused")

    got = _render(monkeypatch, {}, amqp, down)
    assert math.isnan(got[_key("estuary_materialization_lag_bytes", target="redis")])
    assert math.isnan(got[_key("sophia_materialization_lag_documents", target="redis")])
    assert got[_key("sophia_queue_length", queue="sophia.ingest")] == 5
    assert _key("sophia_dead_letters") not in got
    assert got[_key("sophia_metrics_source_up", source="deadletters")] == 0
    assert got[_key("sophia_metrics_source_up", source="stats")] == 1


def test_non_redis_broker_counts_messages_by_passive_declare() -> None:
    """The AMQP branch, driven through kombu's in-memory transport (same channel API, no server)."""
    from kombu import Connection, Exchange, Producer, Queue

    from sophia_tasks.flows import load_spec
    from sophia_tasks.observe.queues import broker_snapshot

    settings = Settings(broker_url="memory://", queue_prefix=f"unit-{time.time_ns()}.")
    spec = load_spec(settings.flow_path)
    name = settings.queue("sophia.backfill.materialize.postgres")
    with Connection("memory://") as conn:
        queue = Queue(name, Exchange(name), routing_key=name)
        producer = Producer(conn.channel())
        for i in range(3):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key=name, declare=[queue])
    snap = broker_snapshot(settings, spec)
    assert snap.measured_bytes is False and snap.bytes_by_target() == {}
    assert snap.queues[name].ready == 3 and snap.queues[name].lane == "bulk"
    assert snap.queues[settings.queue("sophia.ingest")].ready == 0  # never declared: nothing waits there
    assert snap.waiting_by_target()["postgres"] == 3
