"""RabbitMQ over TLS: a node of the test's own that listens on TLS only, with a CA of its own.

`amqps://...?ssl_ca_certs=CA` carries the whole pipeline (a worker and the web app on it, a call
lands in every target), the certificate is verified, and a wrong CA is refused with a clear error.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests

from sophia_tasks.dev.stack import Stack, free_port, port_open, wait_for
from tests.integration.conftest import TOKEN, Harness, gong_call
from tests.integration.test_pipeline import envelope, landed_everywhere
from tests.integration.tls import TlsFiles, make_tls

SOPHIA = str(Path(sys.executable).parent / "sophia-tasks")


@pytest.fixture(scope="module")
def tls_rabbitmq() -> Iterator[tuple[int, TlsFiles]]:
    if not shutil.which("rabbitmq-server"):
        pytest.fail("rabbitmq-server is needed for this test")
    # Not under pytest's tmp dir: its parents are private to root, and the node runs as rabbitmq.
    root = Path(tempfile.mkdtemp(prefix="sophia-rmq-tls-"))
    tls = make_tls(root / "tls", "rmq")
    port, dist = free_port(), free_port()
    (root / "rabbitmq.conf").write_text(
        "listeners.tcp = none\n"
        f"listeners.ssl.default = {port}\n"
        f"ssl_options.cacertfile = {tls.ca}\nssl_options.certfile = {tls.cert}\nssl_options.keyfile = {tls.key}\n"
        "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n")
    (root / "enabled_plugins").write_text("[].\n")
    for sub in ("log", "mnesia"):
        (root / sub).mkdir()
    root.chmod(0o755)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(root)], check=True)
    env = dict(os.environ, RABBITMQ_NODENAME=f"sophia-tls-{uuid.uuid4().hex[:8]}@localhost",
               RABBITMQ_NODE_PORT=str(free_port()), RABBITMQ_DIST_PORT=str(dist),
               RABBITMQ_CONFIG_FILE=str(root / "rabbitmq"), RABBITMQ_MNESIA_BASE=str(root / "mnesia"),
               RABBITMQ_LOG_BASE=str(root / "log"), RABBITMQ_ENABLED_PLUGINS_FILE=str(root / "enabled_plugins"))
    node = subprocess.Popen(["rabbitmq-server"], env=env, stdout=open(root / "node.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 90, "the TLS RabbitMQ node", node, root / "node.log")
        yield port, tls
    finally:
        try:
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(node.pid, signal.SIGKILL)
        # The server script drops to the rabbitmq user, and the Erlang VM it starts can leave the process
        # group: stop every process of this node by its name, so no node outlives the test.
        _kill_node(env["RABBITMQ_NODENAME"])
        shutil.rmtree(root, ignore_errors=True)


def _kill_node(nodename: str) -> None:
    marker = f"RABBITMQ_NODENAME={nodename}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def broker_url(port: int, ca: Path) -> str:
    return f"amqps://guest:guest@127.0.0.1:{port}//?ssl_ca_certs={ca}"


def test_the_pipeline_runs_over_amqps_and_a_wrong_ca_is_refused(harness: Harness, tls_rabbitmq: tuple[int, TlsFiles],
                                                                tmp_path: Path) -> None:
    port, tls = tls_rabbitmq
    env = dict(harness.env, SOPHIA_BROKER_URL=broker_url(port, tls.ca), PORT=str(free_port()),
               SOPHIA_QUEUE_PREFIX=f"t{uuid.uuid4().hex[:6]}.")
    checked = subprocess.run([SOPHIA, "check", "--only", "broker"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    other = make_tls(tmp_path / "other", "other")
    refused = subprocess.run([SOPHIA, "check", "--only", "broker"], env=dict(env, SOPHIA_BROKER_URL=broker_url(
        port, other.ca)), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "certificate verify failed" in refused.stderr, refused.stderr

    stack = Stack(env=env, workdir=tmp_path / "logs")
    stack.workdir.mkdir(parents=True, exist_ok=True)
    try:
        stack.start_worker(name="tlsw", concurrency=2)
        stack.start_web(workers=1, threads=4)
        call = gong_call()
        answer = requests.post(f"http://127.0.0.1:{env['PORT']}/estuary/webhook", json=envelope(call),
                               headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert answer.status_code == 202, answer.text
        harness.wait(lambda: landed_everywhere(harness, call["metaData"]["id"]), 60, "the call, over amqps")
    finally:
        stack.stop()
