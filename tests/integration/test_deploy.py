"""``deploy/deploy.sh`` and ``sophia-tasks check`` against the test services.

The deploy runs on a database of its own, so "changes nothing" (``--dry-run``) and
"creates the tables" can both be seen, and runs twice to show it is safe to repeat.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest

from sophia_tasks.dev.stack import free_port
from tests.integration.conftest import PG_ADMIN, Harness

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "deploy.sh"
SOPHIA = str(Path(sys.executable).parent / "sophia-tasks")


def database_exists(name: str) -> bool:
    conn = psycopg2.connect(PG_ADMIN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def tables(dsn: str) -> set[str]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


@pytest.fixture()
def deploy_env(harness: Harness) -> Iterator[tuple[dict[str, str], str]]:
    name = f"sophia_deploy_{uuid.uuid4().hex[:8]}"
    env = dict(harness.env, SOPHIA_POSTGRES_DSN=f"postgresql://postgres@127.0.0.1:5432/{name}")
    yield env, name
    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


def deploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DEPLOY), *args], env=env, capture_output=True, text=True, timeout=120)


def test_dry_run_changes_nothing_then_deploy_creates_the_tables_and_is_safe_twice(
        harness: Harness, deploy_env: tuple[dict[str, str], str]) -> None:
    env, name = deploy_env
    dry = deploy(env, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would run:" in dry.stdout and "migrate" in dry.stdout
    assert not database_exists(name), "a dry run created the database"
    url = f"http://127.0.0.1:{env['PORT']}"
    assert f"{url}/webhooks/gong" in dry.stdout
    assert f"curl -X POST {url}/estuary/webhook" in dry.stdout
    assert '"Authorization: Bearer ${SOPHIA_WEBHOOK_TOKENS%%,*}"' in dry.stdout
    assert env["SOPHIA_WEBHOOK_TOKENS"].split(",")[0] not in dry.stdout + dry.stderr, "a token was printed"
    for process in ("web: python -m web.serve", "worker: celery -A sophia_tasks worker",
                    "beat: celery -A sophia_tasks beat"):
        assert process in dry.stdout
    # The curl line works as printed (against the test stack's web process).
    (line,) = [printed for printed in dry.stdout.splitlines() if printed.startswith("curl -X POST")]
    sent = subprocess.run(["bash", "-c", line + " -s -o /dev/null -w '%{http_code}'"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert sent.stdout.strip() == "202", sent.stdout + sent.stderr
    harness.wait(lambda: harness.pg_rows("1000000001"), 30, "the curl line's call in PostgreSQL")

    for attempt in (1, 2):
        real = deploy(env)
        assert real.returncode == 0, f"run {attempt}: {real.stdout}{real.stderr}"
        assert "deploy complete" in real.stdout and "would run" not in real.stdout
        assert {"gong_calls_enriched", "sophia_dead_letters"} <= tables(env["SOPHIA_POSTGRES_DSN"])


def test_deploy_stops_with_a_reason(deploy_env: tuple[dict[str, str], str]) -> None:
    env, name = deploy_env
    auth_vars = ("SOPHIA_WEBHOOK_TOKENS", "SOPHIA_WEBHOOK_SECRET", "SOPHIA_GONG_JWT_PUBLIC_KEY",
                 "SOPHIA_INSECURE_NO_AUTH")
    no_auth = deploy({k: v for k, v in env.items() if k not in auth_vars})
    assert no_auth.returncode == 1
    assert "error: config invalid: no webhook authentication" in no_auth.stderr
    assert "stopped at step 2/5" in no_auth.stderr

    no_snowflake = deploy(dict(env, SOPHIA_SNOWFLAKE_PORT=str(free_port())))
    assert no_snowflake.returncode == 1
    assert "snowflake unreachable" in no_snowflake.stderr and "stopped at step 3/5" in no_snowflake.stderr
    assert not database_exists(name)

    bad_arg = deploy(env, "--force")
    assert bad_arg.returncode == 2 and "unknown argument" in bad_arg.stderr
    assert deploy(env, "--help").returncode == 0


def test_check_reports_each_service(harness: Harness) -> None:
    out = harness.cli("check", "--json")
    assert out.returncode == 0, out.stderr
    assert [(r["name"], r["status"]) for r in json.loads(out.stdout)] == [
        ("config", "ok"), ("data_keys", "ok"), ("broker", "ok"), ("redis", "ok"), ("postgres", "ok"),
        ("snowflake", "ok")]
    # Without a data key: a warning that says what is at stake, not a failure.
    clear = subprocess.run([SOPHIA, "check", "--json", "--only", "data_keys"],
                           env={k: v for k, v in harness.env.items() if k != "SOPHIA_DATA_KEYS"}, capture_output=True,
                           text=True, timeout=60)
    assert clear.returncode == 0, clear.stderr
    ((name, status, detail),) = [(r["name"], r["status"], r["detail"]) for r in json.loads(clear.stdout)]
    assert (name, status) == ("data_keys", "warning") and "in clear" in detail
    bad_secret = subprocess.run([SOPHIA, "check", "--only", "config"],
                                env=dict(harness.env, SOPHIA_WEBHOOK_SECRET="whsec_a"), capture_output=True,
                                text=True, timeout=60)
    assert bad_secret.returncode == 1 and "SOPHIA_WEBHOOK_SECRET entry 1" in bad_secret.stderr
    closed = free_port()
    env = dict(harness.env, SOPHIA_REDIS_URL=f"redis://127.0.0.1:{closed}/1",
               SOPHIA_POSTGRES_DSN=f"postgresql://postgres@127.0.0.1:{closed}/sophia")
    down = subprocess.run([SOPHIA, "check", "--json", "--only", "redis", "--only", "postgres"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1
    assert {r["name"]: r["status"] for r in json.loads(down.stdout)} == {"redis": "unreachable",
                                                                         "postgres": "unreachable"}
    assert down.stderr.count("\n") == 1 and down.stderr.startswith("error: redis unreachable")
