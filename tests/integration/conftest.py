"""The integration stack: real Redis, PostgreSQL, the Snowflake emulator, a Celery
worker process and the web app as the Procfile serves it (granian), all on test-only database numbers,
a test-only Postgres database and free ports, so nothing touches demo data."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg2
import pytest
import redis
import requests

from sophia_tasks.dev.stack import Stack, ensure_services, free_port
from sophia_tasks.store.sealing import Sealer, new_key

TOKEN = "test-token-" + uuid.uuid4().hex[:12]
TOKEN2 = "rotated-token-" + uuid.uuid4().hex[:12]
READ_TOKEN = "read-token-" + uuid.uuid4().hex[:12]
#: The suite runs as production should: the journal and the dead letters sealed at rest.
DATA_KEY = new_key()
SEALER = Sealer([DATA_KEY])
WEBHOOK_SECRET = "whsec_" + __import__("base64").b64encode(uuid.uuid4().bytes * 2).decode()


def _rsa_pair() -> tuple[Any, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pem


GONG_PRIVATE_KEY, GONG_PUBLIC_PEM = _rsa_pair()
#: The session's flow spec: the shipped flow plus the test-only collection test_events (SOPHIA_TEST_FLOW overrides).
TEST_FLOW = Path(__file__).resolve().parents[1] / "fixtures" / "flows" / "test_flow.yaml"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# Redis database pairs (broker, cache) a test session may use; 0/1 are the demo's, 14/15 the benchmark's.
SLOTS = ((10, 11), (8, 9), (6, 7), (4, 5), (2, 3))
TEST_DB = "sophia_test"


def _claim_slot() -> tuple[int, tuple[int, int], Any]:
    """Hold a lock on one slot for the session, so two suites on one machine never share queues."""
    import fcntl

    for i, pair in enumerate(SLOTS):
        handle = open(f"/tmp/sophia-tests-slot-{i}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return i, pair, handle
    raise RuntimeError("every test slot is in use by another test session")


def _test_env(tmp: Path, slot: int, pair: tuple[int, int]) -> dict[str, str]:
    global TEST_DB
    TEST_DB = "sophia_test" if slot == 0 else f"sophia_test_{slot}"
    return {
        "SOPHIA_BROKER_URL": f"redis://127.0.0.1:6379/{pair[0]}",
        "SOPHIA_REDIS_URL": f"redis://127.0.0.1:6379/{pair[1]}",
        "SOPHIA_POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:5432/{TEST_DB}",
        "SOPHIA_SNOWFLAKE_PORT": str(free_port()),
        "SOPHIA_SNOWFLAKE_DATA_DIR": str(tmp / "snowflake"),
        "SOPHIA_SNOWFLAKE_DATABASE": "SOPHIA_TEST",
        # Fail fast when the emulator is stopped on purpose; production keeps the 15 s / 60 s defaults.
        "SOPHIA_SNOWFLAKE_LOGIN_TIMEOUT": "3",
        "SOPHIA_SNOWFLAKE_NETWORK_TIMEOUT": "3",
        "PORT": str(free_port()),
        "SOPHIA_WEBHOOK_TOKENS": f"{TOKEN},{TOKEN2}",
        "SOPHIA_READ_TOKENS": READ_TOKEN,
        "SOPHIA_DATA_KEYS": DATA_KEY,
        "SOPHIA_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SOPHIA_GONG_JWT_PUBLIC_KEY": GONG_PUBLIC_PEM,
        "SOPHIA_RETRY_MAX": "5",
        "SOPHIA_RETRY_BACKOFF_BASE": "0.5",
        "SOPHIA_RETRY_BACKOFF_MAX": "2",
        "SOPHIA_INGEST_FLUSH_SECONDS": "0.05",
        "SOPHIA_MAX_BODY_BYTES": str(256 * 1024),
        "SOPHIA_FLOW": os.environ.get("SOPHIA_TEST_FLOW") or str(TEST_FLOW),
    }


def _reset_state(env: dict[str, str]) -> None:
    for url in (env["SOPHIA_BROKER_URL"], env["SOPHIA_REDIS_URL"]):
        redis.Redis.from_url(url).flushdb()
    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (TEST_DB,))
        cur.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}"')
    conn.close()


class Harness:
    """What a test needs: the stack, clients for every target, and helpers to wait."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.env = stack.env
        self.url = f"http://127.0.0.1:{stack.web_port}"
        self.cache = redis.Redis.from_url(self.env["SOPHIA_REDIS_URL"])
        self.http = requests.Session()
        # A kept-alive connection the server closes as a request goes out (its 5 s keep-alive, or
        # after a 413 whose body was never read) is the usual HTTP race: retry idempotent reads, as
        # any client does. POSTs are never retried here.
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.http.mount("http://", HTTPAdapter(max_retries=Retry(
            total=2, connect=2, read=2, status=0, allowed_methods=frozenset({"GET", "HEAD"}),
            raise_on_status=False)))

    # -- sending ----------------------------------------------------------------------
    def post(self, body: Any, token: str | None = TOKEN, headers: dict[str, str] | None = None,
             path: str = "/estuary/webhook", raw: bytes | None = None) -> requests.Response:
        h = dict(headers or {})
        if token is not None:
            h.setdefault("Authorization", f"Bearer {token}")
        data = raw if raw is not None else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
        return self.http.post(self.url + path, data=data, headers=h, timeout=30)

    def read(self, path: str, token: str | None = READ_TOKEN, **kwargs: Any) -> requests.Response:
        """GET a read endpoint (documents, /metrics) with the stack's read token."""
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        kwargs.setdefault("timeout", 30)
        return self.http.get(self.url + path, headers=headers, **kwargs)

    # -- reading the targets ---------------------------------------------------------------
    def redis_doc(self, call_id: str) -> dict[str, Any] | None:
        raw = self.cache.get(f"sophia:gong_calls_enriched:{call_id}")
        return json.loads(raw) if raw else None

    def pg(self) -> Any:
        return psycopg2.connect(self.env["SOPHIA_POSTGRES_DSN"])

    def pg_rows(self, call_id: str) -> list[tuple[Any, ...]]:
        conn = self.pg()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('gong_calls_enriched')")
                if cur.fetchone()[0] is None:
                    return []
                cur.execute("SELECT call_id, flow_document, flow_published_at, title FROM gong_calls_enriched "
                            "WHERE call_id = %s", (call_id,))
                return cur.fetchall()
        finally:
            conn.close()

    def pg_count(self, call_ids: list[str]) -> int:
        """How many of these calls the staging table holds."""
        conn = self.pg()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM gong_calls_enriched WHERE call_id = ANY(%s)", (call_ids,))
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    def sf_connect(self) -> Any:
        import snowflake.connector

        return snowflake.connector.connect(
            user="test", password="test", account="fakesnow", host="127.0.0.1",
            port=int(self.env["SOPHIA_SNOWFLAKE_PORT"]), protocol="http",
            database=self.env["SOPHIA_SNOWFLAKE_DATABASE"], schema="PUBLIC", paramstyle="qmark",
            login_timeout=10, network_timeout=30)

    def sf_rows(self, call_id: str) -> list[tuple[Any, ...]]:
        conn = self.sf_connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute('SELECT "CALL_ID", "FLOW_DOCUMENT", "FLOW_PUBLISHED_AT", "TITLE" '
                            'FROM "GONG_CALLS_ENRICHED" WHERE "CALL_ID" = ?', [call_id])
            except Exception as exc:
                if "does not exist" in str(exc):
                    return []
                raise
            rows = cur.fetchall()
            return [(r[0], json.loads(r[1]) if isinstance(r[1], str) else r[1], r[2], r[3]) for r in rows]
        finally:
            conn.close()

    def sf_document(self, table: str, key_column: str, key: str) -> dict[str, Any] | None:
        """The FLOW_DOCUMENT of one row of a Snowflake table, or None (no row, or no table yet)."""
        conn = self.sf_connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute(f'SELECT "FLOW_DOCUMENT" FROM "{table}" WHERE "{key_column}" = ?', [key])
            except Exception as exc:
                if "does not exist" in str(exc):
                    return None
                raise
            row = cur.fetchone()
            return (json.loads(row[0]) if isinstance(row[0], str) else row[0]) if row else None
        finally:
            conn.close()

    def pg_document(self, table: str, key_column: str, key: str) -> dict[str, Any] | None:
        """The flow_document of one row of a PostgreSQL table, or None (no row, or no table yet)."""
        conn = self.pg()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", (table,))
                if cur.fetchone()[0] is None:
                    return None
                cur.execute(f'SELECT flow_document FROM "{table}" WHERE "{key_column}" = %s', (key,))
                row = cur.fetchone()
                return row[0] if row else None
        finally:
            conn.close()

    def redis_document(self, key: str) -> dict[str, Any] | None:
        raw = self.cache.get(key)
        return json.loads(raw) if raw else None

    def dead_letters(self, **where: Any) -> list[dict[str, Any]]:
        conn = self.pg()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('sophia_dead_letters')")
                if cur.fetchone()[0] is None:
                    return []
                clauses = " AND ".join(f"{k} = %s" for k in where) or "true"
                cur.execute(f"SELECT id, stage, target, collection, document_key, payload, error, details, attempts, "
                            f"status FROM sophia_dead_letters WHERE {clauses} ORDER BY id", list(where.values()))
                cols = [d[0] for d in cur.description]
                rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        finally:
            conn.close()
        for row in rows:  # sealed at rest: opened as `dlq show` does
            row["payload"], row["details"] = SEALER.open(row["payload"]), SEALER.open(row["details"])
        return rows

    def counter(self, name: str, **labels: Any) -> float:
        from sophia_tasks.observe.stats import field

        value = self.cache.hget("sophia:stats:counters", field(name, labels))
        return float(value) if value is not None else 0.0

    def wait(self, check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except Exception as exc:  # a target still warming up
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")

    def cli(self, *args: str, input: str | None = None) -> Any:
        import subprocess
        import sys

        exe = str(Path(sys.executable).parent / "sophia-tasks")
        return subprocess.run([exe, *args], env=self.env, capture_output=True, text=True, timeout=60, input=input)


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    ensure_services()
    tmp = tmp_path_factory.mktemp("stack")
    slot, pair, lock = _claim_slot()
    env = {k: v for k, v in _test_env(tmp, slot, pair).items() if v != ""}
    _reset_state(env)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    stack = Stack.from_env(env, tmp / "logs")
    try:
        stack.start_snowflake()
        stack.start_worker(concurrency=4)
        stack.start_web()
        yield Harness(stack)
    finally:
        stack.stop()
        lock.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def gong_call(call_id: str | None = None, title: str = "Acme - discovery", **meta: Any) -> dict[str, Any]:
    """A small but complete Gong call in the /v2/calls/extensive shape."""
    call_id = call_id or str(uuid.uuid4().int % 10**18)
    meta_data = {"id": call_id, "title": title, "started": "2026-11-20T15:00:00-05:00", "duration": 1860,
                 "direction": "Outbound", "scope": "External", "media": "Video", "language": "eng"}
    meta_data.update(meta)
    return {
        "metaData": meta_data,
        "parties": [
            {"id": "1", "name": "Rita Rep", "emailAddress": "rita@sophia.example", "affiliation": "Internal",
             "speakerId": "s1", "title": "Account Executive"},
            {"id": "2", "name": "Carl Customer", "emailAddress": "carl@acme.com", "affiliation": "External",
             "speakerId": "s2", "title": "VP Sales", "phoneNumber": "+1 415 555 0199"},
        ],
        "content": {"brief": "Acme wants to roll out to two more teams next quarter.",
                    "keyPoints": [{"text": "Budget approved for Q1"}],
                    "trackers": [{"id": "t1", "name": "Pricing", "count": 1, "type": "KEYWORD", "phrases": []}]},
        "interaction": {"speakers": [{"id": "s1", "userId": "u1", "talkTime": 900},
                                     {"id": "s2", "userId": None, "talkTime": 960}],
                        "interactionStats": [{"name": "Talk Ratio", "value": 0.48},
                                             {"name": "Longest Monologue", "value": 95}]},
    }


@contextmanager
def another_web_app(harness: Harness, **env: str | None) -> Iterator[str]:
    """A web app of its own on the test stack's stores, with some variables changed (None: unset);
    yields its URL."""
    merged = {**harness.env, "PORT": str(free_port()), **env}
    workdir = Path(tempfile.mkdtemp(prefix="sophia-web-"))
    stack = Stack(env={k: v for k, v in merged.items() if v is not None}, workdir=workdir)
    try:
        stack.start_web(workers=1)
        yield f"http://127.0.0.1:{stack.web_port}"
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
