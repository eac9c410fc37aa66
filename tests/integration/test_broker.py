"""The Redis broker transport: a message taken off the queue by a consumer that dies before
kombu records it is put back; a message merely waiting in a backlog is never duplicated;
nothing is left behind after an ack."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
import redis
from kombu import Connection, Consumer, Queue

from sophia_tasks.dev.stack import free_port, port_open, wait_for
from sophia_tasks.messaging import transport as guard
from sophia_tasks.messaging.transport import Transport, side_keys, transport_options

PREFIX = "t.sophia."


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 20, "a private redis")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def no_margins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's clock-skew margin and empty-queue grace are seconds long; tests cannot wait them out."""
    monkeypatch.setattr(guard, "SKEW_MARGIN", 0.0)
    monkeypatch.setattr(guard, "EMPTY_GRACE", 0.0)


def connection(url: str, vt: int = 60) -> Connection:
    opts = transport_options(SimpleNamespace(visibility_timeout=vt), (PREFIX,))
    return Connection(url, transport="sophia_tasks.messaging.transport:Transport", transport_options=opts)


def publish(conn: Connection, queue: Queue, body: dict) -> None:
    conn.Producer().publish(body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue],
                            serializer="json")


def drain(conn: Connection, queue: Queue, timeout: float = 3.0) -> list[dict]:
    got: list[dict] = []

    def on_message(body: dict, message) -> None:
        got.append(body)
        message.ack()

    with Consumer(conn, [queue], callbacks=[on_message], accept=["json"]):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.3)
            except TimeoutError:
                if got:
                    break
    return got


def sweep_twice(conn: Connection) -> int:
    """A lost message must be seen on two sweeps in a row before it is put back."""
    channel = conn.default_channel
    channel._last_sweep = 0.0
    first = channel.sweep_lost()
    channel._last_sweep = 0.0
    return first + channel.sweep_lost()


def test_a_message_lost_in_the_delivery_window_is_put_back_once(broker: str, no_margins: None) -> None:
    raw = redis.Redis.from_url(broker)
    queue = Queue(PREFIX + "validate", routing_key=PREFIX + "validate")
    index, payloads = side_keys(queue.name)
    with connection(broker) as conn:
        publish(conn, queue, {"events": [1, 2, 3]})
        assert raw.zcard(index) == 1 and raw.llen(queue.name) == 1
        # A consumer that popped the message and died before recording it (what BRPOP + SIGKILL does):
        assert raw.brpop([queue.name], 1) is not None
        channel = conn.default_channel
        channel._last_sweep = 0.0
        assert channel.sweep_lost() == 0  # first sighting: it could be a delivery in progress
        channel._last_sweep = 0.0
        assert channel.sweep_lost() == 1
        channel._last_sweep = 0.0
        assert channel.sweep_lost() == 0  # put back once, not again while it waits in the queue
        assert raw.llen(queue.name) == 1
        assert drain(conn, queue) == [{"events": [1, 2, 3]}]
    assert raw.zcard(index) == 0 and raw.hlen(payloads) == 0
    assert raw.hlen("unacked") == 0 and raw.llen(queue.name) == 0


def test_a_backlog_is_never_duplicated_and_only_the_lost_message_comes_back(broker: str, no_margins: None) -> None:
    raw = redis.Redis.from_url(broker)
    queue = Queue(PREFIX + "ingest", routing_key=PREFIX + "ingest")
    with connection(broker, vt=1) as conn:
        for i in range(4):
            publish(conn, queue, {"n": i})
            time.sleep(0.01)
        time.sleep(1.5)  # every message is now older than the visibility timeout, still waiting
        assert sweep_twice(conn) == 0
        conn.default_channel.qos.restore_visible(num=None, interval=1)  # kombu's own sweep too
        assert raw.llen(queue.name) == 4  # nothing duplicated
        assert raw.brpop([queue.name], 1) is not None  # message 0 taken by a consumer that then died
        assert sweep_twice(conn) == 1
        got: list[dict] = []
        while len(got) < 4:
            batch = drain(conn, queue)
            assert batch, "the messages never arrived"
            got += batch
        assert sorted(b["n"] for b in got) == [0, 1, 2, 3]
    assert raw.llen(queue.name) == 0 and raw.hlen("unacked") == 0
    assert raw.zcard(side_keys(queue.name)[0]) == 0


def test_queues_outside_the_prefix_are_published_as_kombu_does(broker: str) -> None:
    raw = redis.Redis.from_url(broker)
    queue = Queue("someone.elses.queue", routing_key="someone.elses.queue")
    with connection(broker) as conn:
        publish(conn, queue, {"x": 1})
    assert raw.llen(queue.name) == 1
    assert raw.zcard(side_keys(queue.name)[0]) == 0 and raw.hlen("unacked") == 0


def test_the_celery_app_uses_the_guarded_transport_for_redis() -> None:
    from celery import Celery

    from sophia_tasks.flows import load_spec
    from sophia_tasks.messaging.config import configure
    from sophia_tasks.settings import load_settings

    settings = load_settings({"SOPHIA_BROKER_URL": "redis://127.0.0.1:6379/0", "SOPHIA_VISIBILITY_TIMEOUT": "40",
                              "SOPHIA_RETRY_BACKOFF_MAX": "5"})
    app = Celery("probe", set_as_current=False)
    configure(app, settings, load_spec(settings.flow_path))
    with app.connection_for_write() as conn:
        assert conn.transport_cls is Transport or isinstance(conn.transport, Transport)
        opts = conn.transport_options
    assert opts["guarded_prefixes"] == (settings.queue("sophia."),)
    assert opts["visibility_timeout"] == 40 and opts["unacked_restore_throttle"] == 1
    assert opts["unacked_restore_interval"] == 10 and opts["unacked_mutex_expire"] == 40


def test_queue_depth_counts_ready_and_reserved_messages(broker: str) -> None:
    from celery import Celery

    from sophia_tasks.flows import load_spec
    from sophia_tasks.messaging.config import configure
    from sophia_tasks.observe.queues import broker_snapshot
    from sophia_tasks.settings import load_settings

    settings = load_settings({"SOPHIA_BROKER_URL": broker, "SOPHIA_QUEUE_PREFIX": "t."})
    spec = load_spec(settings.flow_path)
    app = Celery("probe", set_as_current=False)
    configure(app, settings, spec)
    queue = settings.queue("sophia.materialize.redis")
    app.send_task("sophia.materialize", args=["redis", "gong_calls_enriched", [{"x": 1}]], queue=queue)
    raw = redis.Redis.from_url(broker)
    info = broker_snapshot(settings, spec).queues[queue]
    assert info.ready == 1 and not info.reserved
    # A worker takes it: kombu records the delivery in unacked; now it is reserved.
    _, payload = raw.brpop([queue], 1)
    message = json.loads(payload)
    raw.hset("unacked", message["properties"]["delivery_tag"], json.dumps([message, "", queue]))
    info = broker_snapshot(settings, spec).queues[queue]
    assert info.ready == 0 and info.reserved == 1


def test_one_client_per_channel_and_pool_survives_a_broker_restart(tmp_path: Path) -> None:
    """kombu builds a client per publish and ack; ours keeps one per pool, and a restarted broker
    (its connections gone) is still published to and consumed from."""
    port = free_port()

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                                 "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: port_open("127.0.0.1", port), 20, "a private redis")
        return proc

    proc = start()
    try:
        with connection(f"redis://127.0.0.1:{port}/0") as conn:
            channel = conn.default_channel
            first = channel._create_client()
            assert channel._create_client() is first
            assert channel._create_client(asynchronous=True) is not first  # the event loop's own
            queue = Queue(PREFIX + "restart", routing_key=PREFIX + "restart")
            publish(conn, queue, {"n": 1})
            proc.terminate()
            proc.wait(10)
            proc = start()  # empty: the first message went with the old server
            producer = conn.Producer()
            send = conn.ensure(producer, producer.publish, max_retries=5, interval_start=0.2)
            send({"n": 2}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue],
                 serializer="json")
            assert drain(conn, queue, timeout=10) == [{"n": 2}]
            channel._disconnect_pools()  # a new pool gets a new client
            assert channel._create_client() is not first
    finally:
        proc.terminate()
        proc.wait(10)
