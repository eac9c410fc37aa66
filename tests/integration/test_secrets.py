"""No secret in any output: Celery's reports, the worker's conf, the command line, answers and logs.

Every secret variable is set to a unique string; each output is searched for each of them.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from sophia_tasks.dev.stack import BIN
from tests.integration.conftest import TOKEN, TOKEN2, WEBHOOK_SECRET, Harness, another_web_app, gong_call

MARK = uuid.uuid4().hex[:10]
#: Secrets the command-line runs below get on top of the stack's own tokens and webhook secret.
EXTRA = {
    "SOPHIA_SNOWFLAKE_PASSWORD": f"pw-{MARK}-snowflake",
    "SOPHIA_GONG_ACCESS_KEY": f"key-{MARK}-gong",
    "SOPHIA_GONG_ACCESS_KEY_SECRET": f"secret-{MARK}-gong",
    "SOPHIA_SLACK_WEBHOOK_URL": f"http://127.0.0.1:9/services/{MARK}-slack",
}


def secrets() -> dict[str, str]:
    return {"TOKEN": TOKEN, "TOKEN2": TOKEN2, "webhook secret": WEBHOOK_SECRET,
            "its base64 part": WEBHOOK_SECRET.split("_", 1)[1], **EXTRA}


def leaks(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, value in secrets().items() if value in text]


def run(harness: Harness, *argv: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**harness.env, **EXTRA, **(extra or {})}
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=120)


def test_celery_report_and_the_workers_conf_show_no_secret(harness: Harness) -> None:
    celery = str(BIN / "celery")
    report = run(harness, celery, "-A", "sophia_tasks", "report")
    assert report.returncode == 0, report.stderr
    assert "broker_url" in report.stdout and "sophia_settings" not in report.stdout
    conf = run(harness, celery, "-A", "sophia_tasks", "inspect", "conf", "--json", "--timeout", "10")
    assert conf.returncode == 0, conf.stderr
    answers = json.loads(conf.stdout)
    assert answers and all("broker_url" in c for c in answers.values())  # the running worker answered
    assert "sophia_settings" not in conf.stdout
    assert leaks("celery report", report.stdout + report.stderr) + leaks("inspect conf", conf.stdout) == []


def test_command_line_outputs_show_no_secret(harness: Harness) -> None:
    exe = str(Path(sys.executable).parent / "sophia-tasks")
    outputs = {}
    for argv in (["status", "--json"], ["status"], ["check"], ["flows", "list", "--json"]):
        done = run(harness, exe, *argv, extra={"SOPHIA_LOG_LEVEL": "DEBUG"})
        outputs[" ".join(argv)] = done.stdout + done.stderr
    assert '"targets"' in outputs["status --json"]
    found = [leak for where, text in outputs.items() for leak in leaks(where, text)]
    assert found == []


def test_error_answers_and_logs_show_no_secret(harness: Harness) -> None:
    wrong = TOKEN + "x"
    answers = [
        harness.post({"id": "e", "type": "call_completed", "data": gong_call()}, token=wrong),
        harness.post(None, raw=b"{broken", token=TOKEN),
        harness.post({"id": "e", "type": "call_completed"}, token=TOKEN2),
        harness.read("/v1/collections/gong_calls_enriched/documents/nope", token=TOKEN),
    ]
    assert [a.status_code for a in answers] == [403, 400, 400, 403]
    text = "\n".join(a.text + json.dumps(dict(a.headers)) for a in answers)
    logs = "".join(p.log_path.read_text(errors="replace") for p in harness.stack.processes.values())
    assert leaks("answers", text) + leaks("logs", logs) + ([f"{wrong} in answers"] if wrong in text else []) == []


@pytest.mark.parametrize("variable", ["SOPHIA_WEBHOOK_TOKENS", "SOPHIA_SNOWFLAKE_PASSWORD"])
def test_a_variable_and_its_file_form_together_stop_the_start(harness: Harness, tmp_path: Path,
                                                              variable: str) -> None:
    path = tmp_path / "secret"
    path.write_text(f"file-{MARK}\n")
    done = run(harness, str(Path(sys.executable).parent / "sophia-tasks"), "status",
               extra={variable: f"env-{MARK}", f"{variable}_FILE": str(path)})
    assert done.returncode != 0
    assert f"{variable} and {variable}_FILE are both set" in done.stderr
    assert f"file-{MARK}" not in done.stderr + done.stdout and f"env-{MARK}" not in done.stderr + done.stdout


def test_secrets_from_files_start_the_web_app_and_authenticate(harness: Harness, tmp_path: Path) -> None:
    """The _FILE form end to end: a token read from a file authenticates a webhook on a web app of its own."""
    token = f"file-token-{MARK}"
    path = tmp_path / "tokens"
    path.write_text(token + "\n")
    with another_web_app(harness, SOPHIA_WEBHOOK_TOKENS=None, SOPHIA_WEBHOOK_TOKENS_FILE=str(path)) as url:
        body = {"id": f"evt-{MARK}", "type": "call_completed", "data": gong_call()}
        accepted = requests.post(url + "/estuary/webhook", json=body, headers={"Authorization": f"Bearer {token}"},
                                 timeout=10)
        refused = requests.post(url + "/estuary/webhook", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=10)
    assert (accepted.status_code, refused.status_code) == (202, 403), (accepted.text, refused.text)
