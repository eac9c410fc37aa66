"""Flower, as the Procfile runs it, against the test broker: basic auth, workers, task events, metrics."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from sophia_tasks.dev.stack import BIN, Process, free_port, port_open, wait_for
from tests.integration.conftest import TOKEN, TOKEN2, WEBHOOK_SECRET, Harness, gong_call

USER, PASSWORD = "ops", "flower-" + str(time.time_ns())


@pytest.fixture(scope="module")
def flower(harness: Harness) -> Iterator[str]:
    port = free_port()
    # As the Procfile starts it: the credentials in the environment, where `ps` cannot see them.
    proc: Process = harness.stack.spawn("flower", [
        str(BIN / "celery"), "-A", "sophia_tasks", "flower", "--address=127.0.0.1", f"--port={port}"],
        extra_env={"FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"})
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 30, "flower", proc.popen, proc.log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        harness.stack.stop("flower")


def test_flower_requires_basic_auth(flower: str) -> None:
    for path in ("/", "/api/workers", "/api/tasks"):
        anonymous = requests.get(flower + path, timeout=10)
        assert anonymous.status_code == 401, path
        wrong = requests.get(flower + path, auth=(USER, "wrong"), timeout=10)
        assert wrong.status_code == 401, path
    assert requests.get(flower + "/api/workers", auth=(USER, PASSWORD), timeout=10).status_code == 200


def test_flower_sees_the_worker_and_its_task_events(harness: Harness, flower: str) -> None:
    auth = (USER, PASSWORD)

    def workers() -> dict:
        resp = requests.get(flower + "/api/workers", params={"refresh": 1}, auth=auth, timeout=15)
        assert resp.status_code == 200
        return {name: info for name, info in resp.json().items() if name.startswith("worker@")}

    seen = harness.wait(workers, 30, "the worker in /api/workers")
    info = next(iter(seen.values()))
    assert "sophia.materialize" in info.get("registered", [])
    queues = {q["name"] for q in info.get("active_queues", [])}
    assert {"sophia.validate", "sophia.materialize.redis", "sophia.backfill.materialize.redis"} <= queues

    # Task events (worker -E, task_send_sent_event) reach Flower: a call through the pipeline shows up.
    call = gong_call()
    assert harness.post({"type": "call_completed", "data": call}).status_code == 202

    def succeeded(task: str) -> float:
        text = requests.get(flower + "/metrics", auth=auth, timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("flower_events_total{") and f'task="{task}"' in line
                   and 'type="task-succeeded"' in line)

    # The validate task (which writes Redis and PostgreSQL inline) and Snowflake's materialize task.
    harness.wait(lambda: succeeded("sophia.validate") >= 1 and succeeded("sophia.materialize") >= 1, 30,
                 "sophia.validate and sophia.materialize task-succeeded events in Flower")

    tasks = requests.get(flower + "/api/tasks", params={"taskname": "sophia.materialize", "limit": 50},
                         auth=auth, timeout=10)
    assert tasks.status_code == 200 and tasks.json(), tasks.text
    # Flower serves /metrics and /healthcheck without auth (Prometheus scrapes them): it binds to loopback.
    assert requests.get(flower + "/healthcheck", timeout=10).text == "OK"


def test_flower_shows_no_secret_and_its_password_is_not_on_its_command_line(harness: Harness, flower: str) -> None:
    """Flower's worker pages show each worker's Celery conf (``inspect conf``): no setting of ours is there."""
    auth = (USER, PASSWORD)
    workers = harness.wait(lambda: requests.get(flower + "/api/workers", params={"refresh": 1}, auth=auth,
                                                timeout=15).json(), 30, "flower's worker list")
    conf = [w.get("conf") for w in workers.values() if w.get("conf")]
    assert conf, workers  # the page really carries the workers' configuration
    page = json.dumps(workers)
    assert "broker_url" in page
    for secret in (TOKEN, TOKEN2, WEBHOOK_SECRET, WEBHOOK_SECRET.split("_", 1)[1], "sophia_settings"):
        assert secret not in page
    argv = Path(f"/proc/{harness.stack.processes['flower'].popen.pid}/cmdline").read_bytes().decode()
    assert PASSWORD not in argv and "basic-auth" not in argv
