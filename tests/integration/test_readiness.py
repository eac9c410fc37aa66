"""/readyz sees the workers: 503 naming the reason while events wait and no worker consumes them,
200 listing the worker once one consumes; `sophia-tasks status` lists the same nodes."""
from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path

import redis
import requests

from sophia_tasks.dev.stack import Stack, free_port
from tests.integration.conftest import TOKEN, Harness, gong_call


def test_the_harness_worker_is_listed_and_ready(harness: Harness) -> None:
    answer = harness.read("/readyz", token=None)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["checks"]["workers"] == "ok"
    assert [w for w in body["workers"] if w["node"].startswith("worker@") and w["consumed_age_s"] is not None]
    assert harness.read("/healthz", token=None).json() == {"status": "ok"}  # liveness only

    out = harness.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["workers"]["ready"] is True
    assert any(w["node"].startswith("worker@") for w in report["workers"]["live"])


def test_waiting_events_without_a_worker_fail_readiness_until_one_consumes(harness: Harness) -> None:
    prefix = f"ready-{uuid.uuid4().hex[:8]}-"
    env = {**harness.env, "PORT": str(free_port()), "SOPHIA_QUEUE_PREFIX": prefix,
           "SOPHIA_READY_WORKER_SECONDS": "3"}
    workdir = Path(tempfile.mkdtemp(prefix="sophia-ready-"))
    stack = Stack(env=env, workdir=workdir)
    broker = redis.Redis.from_url(env["SOPHIA_BROKER_URL"])
    url = f"http://127.0.0.1:{stack.web_port}"
    try:
        stack.start_web(workers=1)
        idle = requests.get(url + "/readyz", timeout=10)
        assert idle.status_code == 200 and idle.json()["workers"] == [], idle.text  # nothing waits: ready

        call = gong_call()
        sent = requests.post(url + "/estuary/webhook", json={"type": "call_completed", "data": call},
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert sent.status_code == 202, sent.text

        def not_ready() -> dict | None:
            r = requests.get(url + "/readyz", timeout=10)
            return r.json() if r.status_code == 503 else None

        body = harness.wait(not_ready, 15, "/readyz 503 while the event waits with no worker")
        assert body["checks"]["workers"] == "not consuming"
        assert "wait and no worker node sent a heartbeat" in body["reason"], body
        assert body["workers"] == []

        stack.start_worker(name="readyw", concurrency=1)
        harness.wait(lambda: harness.pg_rows(call["metaData"]["id"]), 30, "the waiting call consumed")

        def ready() -> dict | None:
            r = requests.get(url + "/readyz", timeout=10)
            return r.json() if r.status_code == 200 else None

        body = harness.wait(ready, 15, "/readyz 200 once a worker consumes")
        nodes = [w["node"] for w in body["workers"]]
        assert nodes and all(n.startswith("readyw@") for n in nodes), body  # the harness' worker is not ours
        assert body["checks"]["workers"] == "ok"
    finally:
        stack.stop()
        for key in broker.scan_iter(match=f"*{prefix}*"):
            broker.delete(key)
        broker.close()
        shutil.rmtree(workdir, ignore_errors=True)
