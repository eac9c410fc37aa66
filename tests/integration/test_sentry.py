"""A task that fails in a real worker reaches Sentry (a local stand-in), with no secret or PII in it.

The worker under test is a process of its own with SENTRY_DSN set and a queue prefix,
so only it takes the failing task and the session's main worker never sees it.
"""
from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from sophia_tasks.dev.stack import Stack, free_port
from tests.integration.conftest import TOKEN, TOKEN2, Harness
from tests.integration.test_metrics import celery_for, settings_of, spec_of


class SentryStandIn:
    """Accepts what sentry-sdk sends (envelopes and the legacy store endpoint) and keeps it decoded."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                stand_in.paths.append(self.path)
                stand_in.bodies.append(raw)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict[str, Any]]:
        """Error events: envelope items of type event, or store payloads."""
        out = []
        for path, body in zip(self.paths, self.bodies, strict=False):
            if path.startswith("/api/1/store/"):
                out.append(json.loads(body))
                continue
            lines = body.split(b"\n")
            for i in range(1, len(lines) - 1):
                try:
                    header = json.loads(lines[i])
                except ValueError:
                    continue
                if isinstance(header, dict) and header.get("type") == "event":
                    out.append(json.loads(lines[i + 1]))
        return out

    def __enter__(self) -> "SentryStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sentry_stand_in() -> Iterator[SentryStandIn]:
    with SentryStandIn() as stand_in:
        yield stand_in


def test_failing_task_reaches_sentry_scrubbed(harness: Harness, sentry_stand_in: SentryStandIn,
                                               tmp_path: Path) -> None:
    prefix = f"sentry-{time.time_ns()}."
    settings = settings_of(harness, SOPHIA_QUEUE_PREFIX=prefix)
    spec = spec_of(settings)
    stack = Stack(env={**harness.stack.env, "SENTRY_DSN": sentry_stand_in.dsn, "SOPHIA_QUEUE_PREFIX": prefix,
                       "SENTRY_ENVIRONMENT": "integration-test"}, workdir=tmp_path)
    secret = harness.env.get("SOPHIA_WEBHOOK_SECRET") or "whsec_c2VudHJ5LXRlc3Qtc2VjcmV0LXZhbHVl"
    # A target that is not in the flow spec: the task raises KeyError (and autoretries). Its name carries
    # a bearer token, an email and a phone number, which must all be gone from what Sentry receives.
    bad_target = f"nope Bearer {TOKEN} carl@acme.com +1 415 555 0199"
    document = {"_meta": {"published_at": "2026-11-20T20:00:00.000000Z", "event_id": "evt-sentry",
                          "collection": "gong_calls_enriched", "received_at": "2026-11-20T20:00:00Z"},
                "metaData": {"id": "4242", "title": "Call with rita@sophia.example"},
                "parties": [{"emailAddress": "carl@acme.com", "phoneNumber": "+1 415 555 0199",
                             "note": f"token={TOKEN2} secret={secret}"}]}
    stack.start_worker(name="sentry-worker", concurrency=1)
    try:
        app = celery_for(settings, spec)
        app.send_task("sophia.materialize", args=[bad_target, "gong_calls_enriched", [document]],
                      queue=settings.queue("sophia.materialize.redis"))

        def key_errors() -> list[dict[str, Any]]:
            return [e for e in sentry_stand_in.events()
                    if any(v.get("type") == "KeyError" for v in (e.get("exception") or {}).get("values", []))]

        events = harness.wait(key_errors, 30, "the KeyError in the Sentry stand-in")
    finally:
        stack.stop()
        broker = redis.Redis.from_url(settings.broker_url)
        for key in broker.scan_iter(match=f"{prefix}*"):
            broker.delete(key)

    event = events[0]
    assert event["tags"]["celery_task_name"] == "sophia.materialize"
    assert event["environment"] == "integration-test"
    assert event["tags"].get("component") == "worker"
    (exc,) = [v for v in event["exception"]["values"] if v["type"] == "KeyError"]
    assert "***@acme.com" in exc["value"] and "[Filtered]" in exc["value"], exc["value"]
    everything = b"\n".join(sentry_stand_in.bodies).decode("utf-8", "replace")
    for leaked in (TOKEN, TOKEN2, secret.removeprefix("whsec_"), "carl@acme.com", "rita@sophia.example",
                   "415 555 0199", "555 0199"):
        assert leaked not in everything, f"{leaked!r} reached Sentry"
