"""The benchmark's HTTP client against a real local HTTP/1.1 server (keep-alive, closes, statuses)."""
from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from bench import loadgen


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, bytes, int]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.headers.get("Authorization", ""), body, self.client_address[1]))
        status = 409 if body == b"dup" else 202
        answer = b'{"status":"ok"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        if body == b"close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append((self.headers.get("Authorization", ""), self.path.encode(), self.client_address[1]))
        status = 404 if self.path.endswith("/missing") else 200
        answer = b'{"call_id":"1"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    httpd.shutdown()
    httpd.server_close()


def test_posts_reuse_one_kept_alive_connection_and_read_each_status(server: str) -> None:
    async def run() -> list[int]:
        async with loadgen.Client(server, limit=1) as client:
            return [await client.post(b, {"Authorization": "Bearer t"}) for b in (b"a", b"dup", b"b")]

    assert asyncio.run(run()) == [202, 409, 202]
    assert [(a, b) for a, b, _ in Handler.seen] == [("Bearer t", b"a"), ("Bearer t", b"dup"), ("Bearer t", b"b")]
    assert len({conn for _, _, conn in Handler.seen}) == 1


def test_a_connection_the_server_closes_is_replaced(server: str) -> None:
    async def run() -> list[int]:
        async with loadgen.Client(server, limit=1) as client:
            return [await client.post(b, {}) for b in (b"close", b"after")]

    assert asyncio.run(run()) == [202, 202]
    assert len({conn for _, _, conn in Handler.seen}) == 2


def test_closed_loop_counts_accepted_requests(server: str) -> None:
    res = asyncio.run(loadgen.closed_loop(server, {}, lambda: (b"x", None), concurrency=4, duration=0.3))
    assert res.accepted == res.sent > 10 and res.errors == 0
    assert len(res.latencies_ms) == res.accepted


def test_server_cpu_is_read_around_the_measured_window_only(server: str) -> None:
    """The warm-up's CPU is not counted: the reader is called at the window's start and end."""
    reads: list[float] = []

    def reader() -> float:
        reads.append(10.0 + 2.5 * len(reads))
        return reads[-1]

    res = asyncio.run(loadgen.closed_loop(server, {}, lambda: (b"x", None), concurrency=2, duration=0.2,
                                          warmup=0.1, server_cpu=reader))
    assert reads == [10.0, 12.5] and res.server_cpu_s == 2.5
    summary = res.summary()
    assert summary["server_cpu_s"] == 2.5
    assert summary["server_cpu_ms_per_accepted"] == round(2500 / res.accepted, 4)
    assert "server_cpu_s" not in asyncio.run(loadgen.closed_loop(server, {}, lambda: (b"x", None), 1, 0.05)).summary()


def test_refused_connections_are_errors_not_crashes() -> None:
    res = asyncio.run(loadgen.post_batches("http://127.0.0.1:9/hook", {}, [b"x", b"y"], concurrency=2))
    assert res.errors == 2 and res.accepted == 0 and res.first_error


def test_gets_send_the_path_below_the_url_with_the_headers_and_no_body(server: str) -> None:
    async def run() -> list[int]:
        async with loadgen.Client(server, limit=1, method="GET") as client:
            return [await client.post(p, {"Authorization": "Bearer r", "Content-Type": "application/json"})
                    for p in (b"/docs/1", b"/docs/missing", b"/docs/2")]

    assert asyncio.run(run()) == [200, 404, 200]
    assert [(a, b) for a, b, _ in Handler.seen] == [("Bearer r", b"/hook/docs/1"), ("Bearer r", b"/hook/docs/missing"),
                                                    ("Bearer r", b"/hook/docs/2")]
    assert len({conn for _, _, conn in Handler.seen}) == 1  # kept alive: no body left unread


def test_open_loop_gets_at_a_fixed_rate_report_latency_percentiles(server: str) -> None:
    res = asyncio.run(loadgen.open_loop(server, {}, lambda: (b"/docs/7", None), rate=200, duration=0.25,
                                        method="GET"))
    summary = res.summary()
    assert res.sent == 50 and res.accepted == 50 and res.errors == 0
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert {b for _, b, _ in Handler.seen} == {b"/hook/docs/7"}


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="POST or GET"):
        loadgen.Client("http://127.0.0.1:9/x", limit=1, method="PUT")
