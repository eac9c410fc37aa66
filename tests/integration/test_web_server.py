"""The Procfile's web server (``python -m web.serve``, granian) keeps what gunicorn gave:
a request in flight when SIGTERM arrives is answered, then the server exits; the body limit
answers 413 before the body is read; the listed threads serve requests side by side."""
from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

import requests

from sophia_tasks.dev.stack import Process, Stack, free_port
from tests.integration.conftest import TOKEN, Harness, gong_call
from tests.integration.test_bad_input import _read_response


@contextlib.contextmanager
def _web(harness: Harness, **extra: str) -> Iterator[tuple[Stack, Process]]:
    """A second web process (one worker, two threads) on the harness' broker, so the harness'
    worker takes what it accepts."""
    stack = Stack(env={**harness.env, "PORT": str(free_port()), **extra},
                  workdir=Path(tempfile.mkdtemp(prefix="sophia-web-")))
    try:
        yield stack, stack.start_web(workers=1, threads=2)
    finally:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)


def _post_head(length: int, close: bool = False) -> bytes:
    """The head of a webhook POST announcing ``length`` bytes of JSON body."""
    return (f"POST /estuary/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def test_sigterm_answers_the_request_in_flight_then_exits(harness: Harness) -> None:
    with _web(harness) as (stack, proc):
        call = gong_call()
        body = json.dumps({"type": "call_completed", "data": call}).encode()
        sock = socket.create_connection(("127.0.0.1", stack.web_port), timeout=10)
        sock.sendall(_post_head(len(body), close=True) + body[: len(body) // 2])  # in flight: half its body sent
        time.sleep(0.5)
        proc.popen.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.popen.poll() is None, "the server exited with a request in flight"
        sock.sendall(body[len(body) // 2:])
        status, _, answer = _read_response(sock, timeout=20)
        sock.close()
        assert status == 202, answer[:300]
        assert proc.popen.wait(timeout=30) is not None  # then it exits on its own
        # And the event it accepted is on the broker: nothing was acknowledged and dropped.
        harness.wait(lambda: harness.pg_rows(call["metaData"]["id"]), 60, "the call accepted during shutdown")


def test_body_limit_is_answered_before_the_body_is_read(harness: Harness) -> None:
    with _web(harness, SOPHIA_MAX_BODY_BYTES="4096") as (stack, _):
        # Announce a body far over the limit and send none of it: the answer must come anyway.
        sock = socket.create_connection(("127.0.0.1", stack.web_port), timeout=10)
        sock.sendall(_post_head(50_000_000))
        status, _, answer = _read_response(sock, timeout=10)
        sock.close()
        assert status == 413, answer[:300]
        assert b"limit is 4096 bytes" in answer


def test_threads_serve_requests_side_by_side(harness: Harness) -> None:
    """One worker, two threads: a request stalled mid-body does not hold the other thread."""
    with _web(harness) as (stack, _):
        stalled = socket.create_connection(("127.0.0.1", stack.web_port), timeout=10)
        stalled.sendall(_post_head(1000) + b"{")
        time.sleep(0.3)
        resp = requests.get(f"http://127.0.0.1:{stack.web_port}/healthz", timeout=5)
        assert resp.status_code == 200 and resp.json() == {"status": "ok"}
        stalled.close()
