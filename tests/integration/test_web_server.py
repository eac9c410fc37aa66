"""The Procfile's web server (``python -m web.serve``, granian) keeps what gunicorn gave:
a request in flight when SIGTERM arrives is answered, then the server exits; the body limit
answers 413 before the body is read; the listed threads serve requests side by side."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import requests

from sophia_tasks.dev.stack import Stack, free_port
from tests.integration.conftest import TOKEN, Harness, gong_call


def _stack(harness: Harness, **extra: str) -> Stack:
    """A second web process on the harness' broker, so the harness' worker takes what it accepts."""
    env = {**harness.env, "PORT": str(free_port()), **extra}
    return Stack(env=env, workdir=Path(tempfile.mkdtemp(prefix="sophia-web-")))


def _read_response(sock: socket.socket, timeout: float = 20) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_sigterm_answers_the_request_in_flight_then_exits(harness: Harness) -> None:
    stack = _stack(harness)
    try:
        proc = stack.start_web(workers=1, threads=2)
        call = gong_call()
        body = json.dumps({"type": "call_completed", "data": call}).encode()
        head = (f"POST /estuary/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        sock = socket.create_connection(("127.0.0.1", stack.web_port), timeout=10)
        sock.sendall(head + body[: len(body) // 2])  # the request is in flight: half its body sent
        time.sleep(0.5)
        proc.popen.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.popen.poll() is None, "the server exited with a request in flight"
        sock.sendall(body[len(body) // 2:])
        answer = _read_response(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 202"), answer[:300]
        assert proc.popen.wait(timeout=30) is not None  # then it exits on its own
        # And the event it accepted is on the broker: nothing was acknowledged and dropped.
        harness.wait(lambda: harness.pg_rows(call["metaData"]["id"]), 60, "the call accepted during shutdown")
    finally:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)


def test_body_limit_is_answered_before_the_body_is_read(harness: Harness) -> None:
    stack = _stack(harness, SOPHIA_MAX_BODY_BYTES="4096")
    try:
        stack.start_web(workers=1, threads=2)
        # Announce a body far over the limit and send none of it: the answer must come anyway.
        head = (f"POST /estuary/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n").encode()
        sock = socket.create_connection(("127.0.0.1", stack.web_port), timeout=10)
        sock.sendall(head)
        answer = _read_response(sock, timeout=10)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        assert b"limit is 4096 bytes" in answer
    finally:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)


def test_threads_serve_requests_side_by_side(harness: Harness) -> None:
    """One worker, two threads: a request stalled mid-body does not hold the other thread."""
    stack = _stack(harness)
    try:
        stack.start_web(workers=1, threads=2)
        head = (f"POST /estuary/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").encode()
        stalled = socket.create_connection(("127.0.0.1", stack.web_port), timeout=10)
        stalled.sendall(head)
        time.sleep(0.3)
        resp = requests.get(f"http://127.0.0.1:{stack.web_port}/healthz", timeout=5)
        assert resp.status_code == 200 and resp.json() == {"status": "ok"}
        stalled.close()
    finally:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)
