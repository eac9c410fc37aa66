"""The ingest batcher's flush rule: small batches when traffic is light, full ones while a backlog waits."""
from __future__ import annotations

import time
from types import SimpleNamespace

import redis

from sophia_tasks.ingest.batcher import BACKLOG_MAX_WAIT, IngestBatcher
from sophia_tasks.settings import load_settings

URL = "redis://127.0.0.1:6379/12"


def batcher(prefix: str = "tbatch.") -> IngestBatcher:
    settings = load_settings({"SOPHIA_BROKER_URL": URL, "SOPHIA_QUEUE_PREFIX": prefix})
    b = IngestBatcher(SimpleNamespace(app=SimpleNamespace(sophia_settings=settings)))
    b.flushed = 0  # type: ignore[attr-defined]

    def flush() -> None:
        b.flushed += 1  # type: ignore[attr-defined]
        b.buffer, b.messages = [], []

    b.flush = flush  # type: ignore[method-assign]
    return b


def test_flushes_at_the_flush_age_when_nothing_waits_and_holds_while_a_backlog_waits() -> None:
    client = redis.Redis.from_url(URL)
    b = batcher()
    queue = b.settings.queue("sophia.ingest")
    client.delete(queue)
    b.buffer, b.messages, b.first_at = [{"e": 1}], [object()], time.monotonic()
    b.flush_if_due()
    assert b.flushed == 0  # younger than the flush age
    b.first_at = time.monotonic() - b.settings.ingest_flush_seconds - 0.01
    client.rpush(queue, b"waiting")
    try:
        b.flush_if_due()
        assert b.flushed == 0  # a backlog waits: keep filling
        b.first_at = time.monotonic() - BACKLOG_MAX_WAIT - 0.01
        b.flush_if_due()
        assert b.flushed == 1  # but never longer than BACKLOG_MAX_WAIT
    finally:
        client.delete(queue)
    b.buffer, b.messages, b.first_at = [{"e": 2}], [object()], time.monotonic() - b.settings.ingest_flush_seconds - 0.01
    b._backlog_checked = 0.0  # the check is cached for 0.1 s
    b.flush_if_due()
    assert b.flushed == 2  # the queue is empty again: light traffic, send now
    validate = b.settings.queue("sophia.validate")
    client.rpush(validate, *[b"batch"] * 9)  # batches already wait to be validated
    try:
        b.buffer, b.messages, b.first_at = (
            [{"e": 3}], [object()], time.monotonic() - b.settings.ingest_flush_seconds - 0.01
        )
        b._backlog_checked = 0.0
        b.flush_if_due()
        assert b.flushed == 2
    finally:
        client.delete(validate)
