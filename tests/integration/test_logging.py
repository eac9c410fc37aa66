"""One logging set-up: INFO lines of our code reach the web's and the worker's output, with context."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import Harness, gong_call


def test_pipeline_info_lines_reach_the_worker_and_web_logs(harness: Harness) -> None:
    call = gong_call()
    r = harness.post({"callData": call, "isTest": True}, path="/webhooks/gong")
    assert r.status_code == 202, r.text
    call_id = call["metaData"]["id"]
    worker_log = harness.stack.processes["worker"].log_path

    def line() -> str | None:
        for text in worker_log.read_text(errors="replace").splitlines():
            if "test delivery" in text and call_id in text:
                return text
        return None

    found = harness.wait(line, 30, "the worker's INFO line about the test delivery")
    # Text format: level, logger and the batch's stage and size, and the event's id, on the line itself.
    assert " INFO sophia_tasks.pipeline.records: " in found
    assert "stage=validate" in found and "events=" in found and "event_id=" in found
    web_log = harness.stack.processes["web"].log_path.read_text(errors="replace")
    assert " INFO web: web app ready: collections gong_calls" in web_log


def test_the_command_line_logs_json_lines_when_asked(harness: Harness, tmp_path: Path) -> None:
    """SOPHIA_LOG_FORMAT=json: every log line of a command is one JSON object."""
    calls = tmp_path / "calls.ndjson"
    calls.write_text(json.dumps(gong_call()) + "\n")
    env = dict(harness.env, SOPHIA_LOG_FORMAT="json", SOPHIA_LOG_LEVEL="INFO")
    exe = str(Path(sys.executable).parent / "sophia-tasks")
    done = subprocess.run([exe, "backfill", "--file", str(calls)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(text) for text in done.stderr.splitlines() if text.startswith("{")]
    assert records, done.stderr
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
    done_line = [r for r in records if r["logger"] == "sophia_tasks.ops.backfill"]
    assert done_line and done_line[-1]["level"] == "INFO" and done_line[-1]["stage"] == "backfill"
    assert done_line[-1]["events"] == 1 and "published 1" in done_line[-1]["message"]
