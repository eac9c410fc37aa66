"""/metrics after real traffic: exact counts, lag per target, two worker processes adding up, backlog bytes.

The traffic goes through an isolated stack of its own (``ObsStack``: web, workers, emulator, own
queues and counters), and every expected value is still a difference from a baseline read first,
because the observability tests share that stack.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from sophia_tasks.core.documents import format_version
from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.dev.stack import Stack, free_port
from sophia_tasks.flows import load_spec
from sophia_tasks.ingest.buffer import coalesces
from sophia_tasks.messaging.config import configure
from sophia_tasks.observe.queues import broker_snapshot
from sophia_tasks.observe.stats import Stats
from sophia_tasks.settings import Settings, load_settings
from tests.integration.conftest import READ_TOKEN, TOKEN, Harness, gong_call

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
NAMED = ("estuary_flow_lag_seconds", "estuary_flow_throughput_eps", "estuary_flow_errors_total",
         "estuary_materialization_lag_bytes", "sophia_queue_length", "sophia_dead_letters",
         "sophia_documents_written_total", "sophia_batches_written_total")


# -- helpers shared by the observability tests ---------------------------------------------------
READ_AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}

class ObsStack:
    """A web app, a worker and a Snowflake emulator of their own, isolated from the other tests.

    Queues carry a prefix and the shared counters (and hot cache) live in the session's *broker*
    database, so what /metrics reports is this stack's traffic only: no leftover retry, backfill or
    emulator backlog of another test can change an expected count. Only Postgres is shared (its
    rows are keyed by call id; the dead-letter store is the session's).
    """

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        workdir = harness.stack.workdir / "obs"
        self.env = {**harness.stack.env, "SOPHIA_QUEUE_PREFIX": "obs.", "PORT": str(free_port()),
                    "SOPHIA_REDIS_URL": harness.env["SOPHIA_BROKER_URL"],
                    "SOPHIA_SNOWFLAKE_PORT": str(free_port()), "SOPHIA_SNOWFLAKE_DATA_DIR": str(workdir / "snowflake")}
        self.stack = Stack.from_env(self.env, workdir)
        self.targets = Harness(self.stack)  # its readers (pg_rows, sf_rows) on this stack's ports
        self.url = f"http://127.0.0.1:{self.env['PORT']}"
        self.cache = redis.Redis.from_url(self.env["SOPHIA_REDIS_URL"])

    def _adopt(self, name: str) -> None:
        """The session's teardown stops this stack's processes with the rest of its stack."""
        self.harness.stack.processes[f"obs:{name}"] = self.stack.processes[name]

    def start(self) -> "ObsStack":
        self.start_snowflake()
        self.stack.start_worker(name="obs-worker", concurrency=2)
        self._adopt("obs-worker")
        self.stack.start_web(workers=2, threads=2)
        self._adopt("web")
        return self

    def start_snowflake(self) -> None:
        self.stack.start_snowflake()
        self._adopt("snowflake")

    def stop_snowflake(self) -> None:
        self.stack.stop("snowflake")

    def post(self, body: Any) -> requests.Response:
        return requests.post(self.url + "/estuary/webhook", data=json.dumps(body).encode(), timeout=30,
                              headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})

    def redis_doc(self, call_id: str) -> dict[str, Any] | None:
        raw = self.cache.get(f"sophia:gong_calls_enriched:{call_id}")
        return json.loads(raw) if raw else None

    def counter(self, name: str, **labels: Any) -> float:
        from sophia_tasks.observe.stats import field

        value = self.cache.hget("sophia:stats:counters", field(name, labels))
        return float(value) if value is not None else 0.0

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        exe = str(Path(sys.executable).parent / "sophia-tasks")
        return subprocess.run([exe, *args], env={**self.env, **env}, capture_output=True, text=True, timeout=60)

    def settings(self, **env: str) -> Settings:
        return load_settings({**self.env, **env})


_obs: ObsStack | None = None


def obs_stack_for(harness: Harness) -> ObsStack:
    """One isolated stack per session, started by the first test that needs it."""
    global _obs
    if _obs is None or _obs.harness is not harness:
        _obs = ObsStack(harness).start()
    return _obs


@pytest.fixture
def obs(harness: Harness) -> ObsStack:
    return obs_stack_for(harness)


def settings_of(h: Harness, **env: str) -> Settings:
    return load_settings({**h.env, **env})


def spec_of(settings: Settings) -> FlowSpec:
    return load_spec(settings.flow_path)


def celery_for(settings: Settings, spec: FlowSpec) -> Celery:
    """A producer on the test broker, configured like the real app (never the import-time default)."""
    app = Celery("sophia-observability-tests", set_as_current=False)
    configure(app, settings, spec)
    return app


def scrape(h: Harness | ObsStack) -> Samples:
    # A new connection each time: a server closes idle keep-alive connections (gunicorn after 5 s), and reusing
    # a pooled one just as it closes fails the request (RemoteDisconnected).
    resp = requests.get(h.url + "/metrics", timeout=15, headers=READ_AUTH)
    assert resp.status_code == 200, resp.text
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: Any) -> float | None:
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())))


def total(samples: Samples, name: str, **labels: Any) -> float:
    """Sum of every series of ``name`` whose labels include ``labels``."""
    want = {(k, str(v)) for k, v in labels.items()}
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def quiesce(o: ObsStack, timeout: float = 60.0) -> None:
    """Wait until nothing waits or runs on the isolated stack and its counters stopped moving."""
    settings = o.settings()
    spec = spec_of(settings)
    stats = Stats(settings.redis_url)
    deadline = time.monotonic() + timeout
    last: dict[str, float] | None = None
    while time.monotonic() < deadline:
        snap = broker_snapshot(settings, spec)
        busy = sum(q.ready + (q.reserved or 0) for q in snap.queues.values())
        counters = stats.counters()
        if busy == 0 and counters == last:
            return
        last = counters if busy == 0 else None
        time.sleep(0.5)
    raise AssertionError(f"the pipeline did not go quiet within {timeout}s: {broker_snapshot(settings, spec)}")


def envelope(call: dict[str, Any]) -> dict[str, Any]:
    return {"type": "call_completed", "data": call}


def successes(log: Path, offset: int, task: str = "materialize") -> int:
    return len(re.findall(rb"Task sophia\." + task.encode() + rb"\[[^\]]+\] succeeded", log.read_bytes()[offset:]))


def work_done(log: Path, offset: int) -> int:
    """Validate runs (which write the inline targets) and materialize runs (the queued targets)."""
    return successes(log, offset, "validate") + successes(log, offset, "materialize")


# -- tests -------------------------------------------------------------------------------------
def test_counts_from_two_worker_processes_add_up(harness: Harness, obs: ObsStack) -> None:
    """Traffic through two real worker processes (plus their pool children): /metrics is the exact sum."""
    targets = list(spec_of(obs.settings()).materializations)
    quiesce(obs)
    obs.stack.start_worker(name="obs-worker2", concurrency=2)
    try:
        logs = [obs.stack.processes["obs-worker"].log_path, obs.stack.processes["obs-worker2"].log_path]
        offsets = [p.stat().st_size for p in logs]
        before = scrape(obs)
        sent = 0
        for _round in range(4):
            for _ in range(12):
                assert obs.post([envelope(gong_call()) for _ in range(3)]).status_code == 202
                sent += 3
            expected = sent
            harness.wait(
                lambda expected=expected: all(
                    total(scrape(obs), "sophia_documents_written_total", target=t)
                    - total(before, "sophia_documents_written_total", target=t) >= expected
                    for t in targets
                ),
                60, f"{sent} documents written to every target",
            )
            if all(work_done(p, o) > 0 for p, o in zip(logs, offsets, strict=True)):
                break
        quiesce(obs)
        after = scrape(obs)
        per_worker = [work_done(p, o) for p, o in zip(logs, offsets, strict=True)]
        validate_runs = sum(successes(p, o, "validate") for p, o in zip(logs, offsets, strict=True))
    finally:
        obs.stack.stop("obs-worker2")
    assert all(n > 0 for n in per_worker), f"one worker did no pipeline work: {per_worker}"

    def delta(name: str, **labels: Any) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    for t in targets:
        assert delta("sophia_documents_written_total", target=t) == sent, t
        assert delta("estuary_flow_lag_seconds_count", target=t) == sent, t
    assert delta("sophia_events_accepted_total", collection="gong_calls") == sent
    assert delta("sophia_documents_validated_total", collection="gong_calls") == sent
    assert delta("sophia_documents_derived_total", collection="gong_calls_enriched") == sent
    # Every derived batch is written to each inline target once, whichever process wrote it, and comes
    # from one validate run (a redelivered run may add runs, never batches). A coalesced target
    # (Snowflake by default) gathers batches that arrive within its age into one write: fewer, never more.
    settings = obs.settings()
    coalesced = [t for t in targets if coalesces(settings, t)]
    batches = [delta("sophia_batches_written_total", target=t) for t in targets if t not in coalesced]
    assert len(set(batches)) == 1 and batches[0] >= 1, batches
    assert batches[0] <= validate_runs, (batches, validate_runs)
    for t in coalesced:
        assert 1 <= delta("sophia_batches_written_total", target=t) <= batches[0], (t, batches)


def test_every_named_metric_after_traffic(harness: Harness, obs: ObsStack) -> None:
    spec = spec_of(obs.settings())
    targets = list(spec.materializations)
    quiesce(obs)
    before = scrape(obs)
    calls = [gong_call() for _ in range(4)]
    assert obs.post([envelope(c) for c in calls]).status_code == 202
    harness.wait(lambda: all(total(scrape(obs), "estuary_flow_lag_seconds_count", target=t)
                             - total(before, "estuary_flow_lag_seconds_count", target=t) >= 4 for t in targets),
                 30, "four documents in every target")
    quiesce(obs)
    after = scrape(obs)

    names = {n for n, _ in after}
    for name in NAMED:
        assert any(n == name or n.startswith(name + "_") for n in names), name
    for t in targets:
        count = sample(after, "estuary_flow_lag_seconds_count", target=t)
        assert count is not None and count - (sample(before, "estuary_flow_lag_seconds_count", target=t) or 0) == 4
        buckets = sorted(((float(dict(ls)["le"]), v) for (n, ls), v in after.items()
                          if n == "estuary_flow_lag_seconds_bucket" and dict(ls).get("target") == t))
        assert buckets[-1] == (math.inf, count)
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:], strict=False)), f"{t}: buckets must be cumulative"
        assert sample(after, "estuary_flow_lag_seconds_sum", target=t) > 0
        assert (total(after, "sophia_documents_written_total", target=t)
                - total(before, "sophia_documents_written_total", target=t)) == 4
        # Every known error series exists (at zero before the first error), so rate() works from the start.
        for reason in ("data", "unreachable", "exception"):
            assert sample(after, "estuary_flow_errors_total", stage="materialize", target=t, reason=reason) is not None
        assert sample(after, "estuary_materialization_lag_bytes", target=t) == 0
        assert sample(after, "sophia_last_written_timestamp_seconds", target=t) > time.time() - 60
        assert sample(after, "sophia_dead_letters_pending", stage="materialize", target=t) is not None
    for stage in ("capture", "validate", "derive", "materialize"):
        assert sample(after, "estuary_flow_throughput_eps", stage=stage) is not None
    assert sample(after, "estuary_flow_throughput_eps", stage="materialize") > 0
    queues = {dict(ls)["queue"] for (n, ls) in after if n == "sophia_queue_length"}
    for t in targets:
        assert {f"obs.sophia.materialize.{t}", f"obs.sophia.backfill.materialize.{t}"} <= queues
    assert {f"obs.sophia.{q}" for q in ("ingest", "validate", "derive", "backfill", "ops")} <= queues
    assert sample(after, "sophia_dead_letters") is not None
    for source in ("stats", "broker", "deadletters"):
        assert sample(after, "sophia_metrics_source_up", source=source) == 1


def test_backlog_bytes_of_the_bulk_lane_reach_metrics(harness: Harness, obs: ObsStack) -> None:
    """A bulk-lane batch nobody consumes shows as queue length and as bytes waiting for its target."""
    settings = obs.settings()
    app = celery_for(settings, spec_of(settings))
    queue = settings.queue("sophia.backfill.materialize.redis")
    call = gong_call()
    assert obs.post(envelope(call)).status_code == 202
    doc = harness.wait(lambda: obs.redis_doc(call["metaData"]["id"]), 30, "the call in redis")
    doc["_meta"]["published_at"] = format_version(datetime.now(timezone.utc) + timedelta(seconds=1))
    doc["metaData"]["title"] = "bulk lane"
    quiesce(obs)
    replies = app.control.cancel_consumer(queue, reply=True, timeout=5, destination=["obs-worker@" + _host()])
    assert replies, "the worker did not answer cancel_consumer"
    try:
        time.sleep(1.5)  # a poll already in flight may still include the queue
        before = scrape(obs)
        app.send_task("sophia.materialize", args=["redis", "gong_calls_enriched", [doc]],
                      kwargs={"attempt": 1, "lane": "bulk"}, queue=queue)
        message_bytes = len(json.dumps(doc))
        now = scrape(obs)
        assert sample(now, "sophia_queue_length", queue=queue) == 1
        waiting = sample(now, "estuary_materialization_lag_bytes", target="redis")
        assert waiting is not None and waiting >= message_bytes, (waiting, message_bytes)
        assert sample(now, "estuary_materialization_lag_bytes", target="postgres") == \
            sample(before, "estuary_materialization_lag_bytes", target="postgres") == 0
    finally:
        app.control.add_consumer(queue, reply=True, timeout=5, destination=["obs-worker@" + _host()])
    harness.wait(lambda: (obs.redis_doc(call["metaData"]["id"]) or {}).get("metaData", {}).get("title")
                 == "bulk lane", 30, "the bulk batch written once consumed again")
    quiesce(obs)
    assert sample(scrape(obs), "estuary_materialization_lag_bytes", target="redis") == 0


def _host() -> str:
    import socket

    return socket.gethostname()


def test_broker_snapshot_counts_ready_and_reserved_messages_of_both_lanes(harness: Harness) -> None:
    """Reserved messages (a worker holds them: running, prefetched, or a retry's countdown) count as waiting."""
    settings = settings_of(harness, SOPHIA_QUEUE_PREFIX=f"obs-{time.time_ns()}.")
    spec = spec_of(settings)
    app = celery_for(settings, spec)
    doc = {"_meta": {"published_at": format_version(datetime.now(timezone.utc))}, "metaData": {"id": "1"},
           "blob": "x" * 5000}
    live, bulk = settings.queue("sophia.materialize.snowflake"), settings.queue("sophia.backfill.materialize.postgres")
    import redis

    broker = redis.Redis.from_url(settings.broker_url)
    tag = f"obs-test-{time.time_ns()}"
    try:
        app.send_task("sophia.materialize", args=["snowflake", "gong_calls_enriched", [doc]], queue=live)
        app.send_task("sophia.materialize", args=["postgres", "gong_calls_enriched", [doc, doc]],
                      kwargs={"lane": "bulk"}, queue=bulk)
        # What kombu stores for a message a worker reserved: [message, exchange, routing key].
        raw = broker.lindex(live, 0)
        entry = json.dumps([json.loads(raw), "sophia.ops", live])
        broker.hset("unacked", tag, entry)
        snap = broker_snapshot(settings, spec)
        assert snap.queues[live].ready == 1 and snap.queues[bulk].ready == 1
        assert snap.queues[live].reserved == 1 and snap.queues[live].reserved_bytes == len(entry)
        sizes = snap.bytes_by_target()
        assert sizes["snowflake"] >= len(raw) + len(entry)
        assert sizes["postgres"] >= 2 * 5000
        assert sizes["redis"] == 0
        assert snap.waiting_by_target() == {"redis": 0, "postgres": 1, "snowflake": 2}
    finally:
        broker.hdel("unacked", tag)
        broker.delete(live, bulk)


# -- deploy/: every metric the dashboard and the alert rules query is exported ------------------
ROOT = Path(__file__).resolve().parents[2]
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "inf", "nan", "le"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)        # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)                    # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                   # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        word, call = m.group(1), m.group(2)
        if call or word in _PROMQL_WORDS or re.fullmatch(r"\d+\w*", word):
            continue
        names.add(word)
    return names


def _queried_expressions() -> list[str]:
    import yaml

    dashboard = json.loads((ROOT / "deploy/grafana/sophia-tasks.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            exprs.append(rule["expr"])
    return exprs


def test_promql_metric_names_parser() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (target, le) (rate(estuary_flow_lag_seconds_bucket{target="x"}[5m])))'
        ' > 300 and on() time() - sophia_last_written_timestamp_seconds > 72 * 3600'
    ) == {"estuary_flow_lag_seconds_bucket", "sophia_last_written_timestamp_seconds"}


def exported_names(h: ObsStack) -> set[str]:
    """Every series name /metrics declares (# TYPE), with the suffixes its type adds, plus every sample.

    A family can be declared without samples yet (no alert firing, no write so far): querying it is valid.
    """
    text = requests.get(h.url + "/metrics", timeout=15, headers=READ_AUTH).text
    names = {name for name, _ in scrape(h)}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
                "summary": ("_count", "_sum", "")}
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.update(m.group(1) + s for s in suffixes.get(m.group(2), ("",)))
    return names


def test_dashboard_and_alert_rules_query_only_exported_metrics(harness: Harness, obs: ObsStack) -> None:
    exported = exported_names(obs)
    exprs = _queried_expressions()
    assert len(exprs) >= 10
    queried = set().union(*(promql_metric_names(e) for e in exprs))
    for name in ("estuary_flow_lag_seconds_bucket", "estuary_flow_throughput_eps", "estuary_flow_errors_total",
                 "estuary_materialization_lag_bytes", "sophia_queue_length", "sophia_dead_letters"):
        assert name in queried, f"the dashboard and rules should show {name}"
    assert queried <= exported, f"queried but not exported: {sorted(queried - exported)}"
