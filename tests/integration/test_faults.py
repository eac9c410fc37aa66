"""Faults survived on real processes; each test ends by counting every target.

A stack of its own per broker (a Redis with append-only persistence on a free port, the same
Redis over TLS only, with a CA of the test's own, and RabbitMQ with a queue prefix of its own),
sharing the session's cache Redis, PostgreSQL database and Snowflake emulator (call ids are
unique per test).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest

from sophia_tasks.dev.stack import Stack, free_port, port_open, wait_for
from tests.integration.conftest import TOKEN, Harness, gong_call
from tests.integration.tls import TlsFiles, make_tls


def start_redis_broker(workdir: Path, port: int, tls: TlsFiles | None = None) -> subprocess.Popen:
    """``tls``: TLS only (no plain port), so every client of the stack must speak it."""
    workdir.mkdir(parents=True, exist_ok=True)
    listen = ["--port", str(port)] if tls is None else [
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
        "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no"]
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", *listen, "--bind", "127.0.0.1",
         "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", str(workdir)],
        stdout=open(workdir / "redis.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: port_open("127.0.0.1", port), 20, "the broker redis")
    return proc


class FaultStack(Harness):
    broker_proc: subprocess.Popen | None = None
    broker_dir: Path
    broker_port: int = 0
    broker_tls: TlsFiles | None = None

    def restart_broker(self) -> None:
        if self.broker_proc is not None:
            self.broker_proc.terminate()
            self.broker_proc.wait(15)
            self.broker_proc = start_redis_broker(self.broker_dir, self.broker_port, self.broker_tls)
            return
        # RabbitMQ: stop and start the broker application (durable queues, persistent messages).
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        wait_for(lambda: port_open("127.0.0.1", 5672), 60, "rabbitmq after restart")


#: Faults of the targets (not of the broker's transport) run on the two ways a batch travels: claim-checked on
#: Redis, inside the message on RabbitMQ. TLS to Redis (rediss) changes the connection, not the path, so it
#: runs with the broker's own faults: a worker killed mid-stream and a broker restart.
TARGET_SIDE = pytest.mark.parametrize("faults", ["redis", "rabbitmq"], indirect=True)


@pytest.fixture(scope="module", params=["redis", "rediss", "rabbitmq"])
def faults(request: pytest.FixtureRequest, harness: Harness,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    tmp = tmp_path_factory.mktemp(f"faults-{request.param}")
    env = dict(harness.env)
    env.update({
        "PORT": str(free_port()),
        # Redelivery of a killed worker's messages waits for the visibility timeout: keep it short here.
        "SOPHIA_VISIBILITY_TIMEOUT": "8",
        "SOPHIA_RETRY_BACKOFF_MAX": "2",
        "SOPHIA_RETRY_MAX": "8",
        "SOPHIA_QUEUE_PREFIX": f"f{uuid.uuid4().hex[:8]}.",
    })
    broker_proc = None
    tls = make_tls(tmp / "tls") if request.param == "rediss" else None
    if request.param in ("redis", "rediss"):
        port = free_port()
        broker_proc = start_redis_broker(tmp / "broker", port, tls)
        env["SOPHIA_BROKER_URL"] = (f"redis://127.0.0.1:{port}/0" if tls is None else
                                    f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tls.ca}&ssl_cert_reqs=required")
    else:
        if not port_open("127.0.0.1", 5672):
            subprocess.run(["rabbitmq-server", "-detached"], check=False)
            wait_for(lambda: port_open("127.0.0.1", 5672), 60, "rabbitmq")
        env["SOPHIA_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:5672//"
    stack = Stack(env=env, workdir=tmp / "logs")
    stack.workdir.mkdir(parents=True, exist_ok=True)
    h: FaultStack | None = None
    try:
        stack.start_worker(name="fw1", concurrency=2)
        stack.start_web(workers=2, threads=4)
        h = FaultStack(stack)
        h.broker_proc = broker_proc
        h.broker_dir = tmp / "broker"
        h.broker_port = port if broker_proc else 0
        h.broker_tls = tls
        h.kind = request.param  # type: ignore[attr-defined]
        yield h
    finally:
        stack.stop()
        if request.param == "rabbitmq":
            _delete_rabbit_queues(env)
        proc = h.broker_proc if h is not None else broker_proc
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def _delete_rabbit_queues(env: dict[str, str]) -> None:
    from kombu import Connection

    from sophia_tasks.flows import load_spec
    from sophia_tasks.observe.queues import all_queues
    from sophia_tasks.settings import load_settings

    settings = load_settings(env)
    with Connection(settings.broker_url) as conn:
        channel = conn.channel()
        for q in all_queues(settings, load_spec(settings.flow_path)):
            for name in (q, q.replace("materialize.", "backfill.materialize.")):
                try:
                    channel.queue_delete(name)
                except Exception:
                    channel = conn.channel()


def stream(h: Harness, calls: list[dict[str, Any]], per_request: int = 10, stop: threading.Event | None = None,
           out: list[int] | None = None) -> None:
    """POST the calls in small batches, retrying 503s as a real sender would."""
    session = __import__("requests").Session()
    for i in range(0, len(calls), per_request):
        body = json.dumps([{"type": "call_completed", "data": c} for c in calls[i:i + per_request]])
        for _ in range(100):
            r = session.post(h.url + "/estuary/webhook", data=body, timeout=30,
                             headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            if r.status_code != 503:
                break
            time.sleep(0.2)
        assert r.status_code in (200, 202), r.text
        if out is not None:
            out.append(r.status_code)


def restart_worker(h: Harness, name: str) -> None:
    """Start a replacement under the same node name, as a supervisor would.

    RabbitMQ drops a killed worker's exclusive pidbox queue a moment after its
    connection dies; until then the replacement is refused and simply tries again.
    """
    for attempt in range(10):
        try:
            h.stack.start_worker(name=name, concurrency=2)
            return
        except RuntimeError as exc:
            if "RESOURCE_LOCKED" not in str(exc) or attempt == 9:
                raise
            h.stack.processes.pop(name, None)
            time.sleep(1)


def counts(h: Harness, ids: list[str]) -> dict[str, int]:
    pipe = h.cache.pipeline(transaction=False)
    for cid in ids:
        pipe.exists(f"sophia:gong_calls_enriched:{cid}")
    in_redis = sum(pipe.execute())
    conn = h.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT call_id) FROM gong_calls_enriched WHERE call_id = ANY(%s)",
                        (ids,))
            pg_rows, pg_distinct = cur.fetchone()
    finally:
        conn.close()
    sf = h.sf_connect()
    try:
        cur = sf.cursor()
        cur.execute('SELECT COUNT(*), COUNT(DISTINCT "CALL_ID") FROM "GONG_CALLS_ENRICHED" '
                    'WHERE "CALL_ID" IN (SELECT value::VARCHAR FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)))',
                    [json.dumps(ids)])
        sf_rows, sf_distinct = cur.fetchone()
    finally:
        sf.close()
    return {"redis": in_redis, "postgres": pg_rows, "postgres_distinct": pg_distinct,
            "snowflake": sf_rows, "snowflake_distinct": sf_distinct}


class Partial(dict):
    """Counts so far: falsy, so a wait keeps polling, but shown when it times out."""

    def __bool__(self) -> bool:
        return False


def all_landed(h: Harness, ids: list[str]) -> dict[str, int]:
    c = counts(h, ids)
    return c if c["redis"] == c["postgres"] == c["snowflake"] == len(ids) else Partial(c)


def exactly_once(c: dict[str, int], n: int) -> None:
    assert c == {"redis": n, "postgres": n, "postgres_distinct": n, "snowflake": n, "snowflake_distinct": n}, c


def test_worker_killed_mid_stream_every_event_lands_exactly_once(faults: FaultStack) -> None:
    calls = [gong_call() for _ in range(2000)]
    ids = [c["metaData"]["id"] for c in calls]
    sender = threading.Thread(target=stream, args=(faults, calls))
    sender.start()
    faults.wait(lambda: counts(faults, ids)["redis"] >= 300, 60, "a first part of the stream landed")
    faults.stack.processes["fw1"].kill()  # SIGKILL to the worker and its pool
    faults.stack.processes.pop("fw1")
    restart_worker(faults, "fw1")
    sender.join(180)
    final = faults.wait(lambda: all_landed(faults, ids), 180, "all 2,000 events in every target")
    exactly_once(final, len(ids))
    assert not [letter for letter in faults.dead_letters() if letter["document_key"] in set(ids)]


@TARGET_SIDE
def test_two_worker_nodes_share_the_work_and_survive_one_killed(faults: FaultStack) -> None:
    faults.stack.start_worker(name="fw2", concurrency=2)
    try:
        calls = [gong_call() for _ in range(600)]
        ids = [c["metaData"]["id"] for c in calls]
        sender = threading.Thread(target=stream, args=(faults, calls))
        sender.start()
        done = re.compile(r"Task sophia\.(validate|materialize)\[[^\]]+\] succeeded")

        def did_work(name: str) -> bool:  # validate writes Redis and PostgreSQL inline; Snowflake is queued
            return bool(done.search(faults.stack.workdir.joinpath(f"{name}.log").read_text(errors="replace")))

        # Killed once it has finished work of its own (so the work was shared) while the stream goes on.
        faults.wait(lambda: counts(faults, ids)["redis"] >= 100 and did_work("fw2"), 60, "fw2 sharing the work")
        faults.stack.processes["fw2"].kill()
        faults.stack.processes.pop("fw2")
        sender.join(120)
        final = faults.wait(lambda: all_landed(faults, ids), 180, "all events in every target")
        exactly_once(final, len(ids))
        for name in ("fw1", "fw2"):
            assert did_work(name), f"{name} did no work"
    finally:
        if "fw2" in faults.stack.processes:
            faults.stack.stop("fw2")


@TARGET_SIDE
def test_postgres_connections_killed_mid_stream(faults: FaultStack) -> None:
    calls = [gong_call() for _ in range(500)]
    ids = [c["metaData"]["id"] for c in calls]
    admin = psycopg2.connect(faults.env["SOPHIA_POSTGRES_DSN"])
    admin.autocommit = True
    sender = threading.Thread(target=stream, args=(faults, calls))
    sender.start()
    killed = 0
    deadline = time.monotonic() + 6
    with admin.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'sophia-tasks:%%' AND pid <> pg_backend_pid() "
                        "AND datname = current_database()")  # this session's database: not a parallel one's
            killed += cur.fetchone()[0]
            time.sleep(0.3)
    admin.close()
    sender.join(120)
    assert killed > 0
    final = faults.wait(lambda: all_landed(faults, ids), 120, "all events in every target")
    exactly_once(final, len(ids))


@TARGET_SIDE
def test_locked_postgres_table_does_not_hold_back_redis_and_snowflake(faults: FaultStack) -> None:
    calls = [gong_call() for _ in range(40)]
    ids = [c["metaData"]["id"] for c in calls]
    locker = psycopg2.connect(faults.env["SOPHIA_POSTGRES_DSN"])
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE gong_calls_enriched IN ACCESS EXCLUSIVE MODE")
            stream(faults, calls)
            c = faults.wait(lambda: (lambda c: c if c["redis"] == c["snowflake"] == len(ids) else None)(
                counts_without_pg(faults, ids)), 20, "redis and snowflake while postgres is locked")
            assert c["redis"] == c["snowflake"] == len(ids)
        locker.rollback()
    finally:
        locker.close()
    final = faults.wait(lambda: all_landed(faults, ids), 90, "postgres catching up")
    exactly_once(final, len(ids))


def counts_without_pg(h: Harness, ids: list[str]) -> dict[str, int]:
    pipe = h.cache.pipeline(transaction=False)
    for cid in ids:
        pipe.exists(f"sophia:gong_calls_enriched:{cid}")
    in_redis = sum(pipe.execute())
    sf = h.sf_connect()
    try:
        cur = sf.cursor()
        cur.execute('SELECT COUNT(*) FROM "GONG_CALLS_ENRICHED" '
                    'WHERE "CALL_ID" IN (SELECT value::VARCHAR FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)))',
                    [json.dumps(ids)])
        (in_sf,) = cur.fetchone()
    finally:
        sf.close()
    return {"redis": in_redis, "snowflake": in_sf}


def test_broker_restart_loses_no_accepted_event(faults: FaultStack) -> None:
    faults.stack.stop("fw1")  # accepted events wait on the broker
    try:
        calls = [gong_call() for _ in range(200)]
        ids = [c["metaData"]["id"] for c in calls]
        stream(faults, calls)
        faults.restart_broker()
    finally:
        faults.stack.start_worker(name="fw1", concurrency=2)
    final = faults.wait(lambda: all_landed(faults, ids), 120, "every accepted event after the broker restart")
    exactly_once(final, len(ids))


@TARGET_SIDE
def test_poison_document_is_dead_lettered_and_the_rest_of_its_batch_lands(faults: FaultStack) -> None:
    """A document Postgres refuses (a key over the btree limit) cannot block its batch."""
    from sophia_tasks.messaging.routing import materialize_queue
    from sophia_tasks.settings import load_settings

    settings = load_settings(faults.env)
    good = [gong_call() for _ in range(9)]
    poison = gong_call()
    # Random digits do not compress: the key overflows the btree's 2,704-byte limit.
    poison["metaData"]["id"] = "".join(__import__("random").choice("0123456789") for _ in range(20000))
    docs = []
    for c in good + [poison]:
        docs.append({"_meta": {"published_at": "2026-11-25T00:00:00.000000Z", "event_id": uuid.uuid4().hex,
                               "collection": "gong_calls_enriched", "received_at": "2026-11-25T00:00:00.000000Z",
                               "source": "test"}, **c})
    from celery import Celery

    from sophia_tasks.flows import load_spec
    from sophia_tasks.messaging.config import configure

    app = Celery("poison-sender", set_as_current=False)
    configure(app, settings, load_spec(settings.flow_path))
    app.send_task("sophia.materialize", args=["postgres", "gong_calls_enriched", docs], kwargs={"attempt": 1},
                  queue=materialize_queue(settings, "postgres"))
    ids = [c["metaData"]["id"] for c in good]
    faults.wait(lambda: all(faults.pg_rows(i) for i in ids), 30, "the good documents in postgres")
    letters = faults.wait(lambda: [letter for letter in faults.dead_letters(target="postgres", stage="materialize")
                                   if letter["document_key"] == poison["metaData"]["id"]], 90, "the poison letter")
    assert letters[0]["attempts"] == int(faults.env["SOPHIA_RETRY_MAX"])
    assert "index row" in letters[0]["error"] or "exceeds" in letters[0]["error"]
