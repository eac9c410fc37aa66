"""A fake Gong API (``POST /v2/calls/extensive``) on 127.0.0.1 for backfill tests.

It pages a fixed list of calls with cursors, checks Basic auth and the request body,
and can misbehave on purpose, per page: answer 429 with ``Retry-After`` first, fail
with 5xx a few times and then recover, or fail forever. Every request is recorded
(with its arrival time) so tests can check the pacing and what was asked.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    at: float
    page: int | None
    body: dict[str, Any]
    authorization: str | None
    status: int


@dataclass
class FakeGong:
    """Serve ``pages`` (lists of calls); ``faults[page]`` is a list of statuses to answer before the
    real page (429 carries ``Retry-After: retry_after``); ``broken_pages`` always answer 500."""

    pages: list[list[dict[str, Any]]]
    access_key: str = "test-key"
    access_key_secret: str = "test-secret"
    faults: dict[int, list[int]] = field(default_factory=dict)
    broken_pages: set[int] = field(default_factory=set)
    retry_after: str = "1"
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._faults = {k: list(v) for k, v in self.faults.items()}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "FakeGong":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, headers, payload = fake.answer(self.path, raw, self.headers.get("Authorization"))
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-gong")
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def clear_faults(self) -> None:
        """Forget the queued 429/5xx answers (the broken pages stay broken)."""
        with self._lock:
            self._faults.clear()

    # -- behaviour ----------------------------------------------------------------------------
    @staticmethod
    def cursor_of(page: int) -> str:
        return f"cursor-{page}-{'x' * 8}"

    def _page_of(self, cursor: str | None) -> int | None:
        if cursor is None:
            return 0
        for i in range(len(self.pages)):
            if self.cursor_of(i) == cursor:
                return i
        return None

    def answer(self, path: str, raw: bytes, authorization: str | None) -> tuple[int, dict[str, str], Any]:
        now = time.monotonic()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        expected = "Basic " + base64.b64encode(f"{self.access_key}:{self.access_key_secret}".encode()).decode()
        page = self._page_of(body.get("cursor")) if isinstance(body, dict) else None
        status, headers, payload = self._decide(path, body, authorization, expected, page)
        with self._lock:
            self.requests.append(Recorded(at=now, page=page, body=body if isinstance(body, dict) else {},
                                          authorization=authorization, status=status))
        return status, headers, payload

    def _decide(self, path: str, body: Any, authorization: str | None, expected: str,
                page: int | None) -> tuple[int, dict[str, str], Any]:
        if path != "/v2/calls/extensive":
            return 404, {}, {"errors": [f"no route {path}"]}
        if authorization != expected:
            return 401, {}, {"errors": ["bad credentials"]}
        flt = body.get("filter") if isinstance(body, dict) else None
        if not isinstance(flt, dict) or "fromDateTime" not in flt or "toDateTime" not in flt:
            return 400, {}, {"errors": ["filter.fromDateTime and filter.toDateTime are required"]}
        if page is None:
            return 400, {}, {"errors": ["cursor is not valid"]}
        if page in self.broken_pages:
            return 500, {}, {"errors": ["internal error (this page never recovers)"]}
        with self._lock:
            queue = self._faults.get(page) or []
            fault = queue.pop(0) if queue else None
        if fault == 429:
            return 429, {"Retry-After": self.retry_after}, {"errors": ["API rate limit exceeded"]}
        if fault is not None:
            return fault, {}, {"errors": [f"transient {fault}"]}
        records: dict[str, Any] = {"totalRecords": sum(len(p) for p in self.pages),
                                   "currentPageSize": len(self.pages[page]), "currentPageNumber": page}
        if page + 1 < len(self.pages):
            records["cursor"] = self.cursor_of(page + 1)
        return 200, {}, {"requestId": f"req-{page}", "records": records, "calls": self.pages[page]}
