"""Micro-batching between the webhook and the pipeline.

The webhook publishes one ``sophia.ingest`` message per request (a request may
already hold many events). This consumer step, running in every worker's main
process on a channel of its own, gathers those messages and flushes them as one
``sophia.validate`` task of up to ``ingest_batch_size`` events, or after
``ingest_flush_seconds`` when traffic is light (up to ``BACKLOG_MAX_WAIT`` while a
backlog waits in the queue). The gathered messages are acked only after the batch
task is on the broker, so a crash in between redelivers them (and every later stage
is idempotent).

``sophia.ingest`` is also a plain task, so a message consumed some other way
(``celery call``, an old worker) still goes through, one message per batch.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from kombu import Consumer, Queue

from sophia_tasks.celery_app import stage_queue

log = logging.getLogger(__name__)

#: Seconds a batch may keep filling while more events wait in the ingest queue.
BACKLOG_MAX_WAIT = 1.0
#: Validate tasks waiting beyond which the pipeline counts as backlogged (a few per pool process is normal).
VALIDATE_BACKLOG = 8


def events_of(body: Any) -> list[dict[str, Any]]:
    """Events from a Celery protocol-2 body ``[args, kwargs, embed]`` of ``sophia.ingest``."""
    if isinstance(body, (list, tuple)) and len(body) >= 2:
        args, kwargs = body[0], body[1]
        if args and isinstance(args[0], list):
            return list(args[0])
        if isinstance(kwargs, dict) and isinstance(kwargs.get("events"), list):
            return list(kwargs["events"])
    raise ValueError("not a sophia.ingest message")


class IngestBatcher(bootsteps.ConsumerStep):
    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.app = c.app
        self.settings = c.app.conf.sophia_settings
        self.buffer: list[dict[str, Any]] = []
        self.messages: list[Any] = []
        self.first_at = 0.0
        self.timer_entry: Any = None
        self._redis: Any = None
        self._backlog = False
        self._backlog_checked = 0.0

    def get_consumers(self, channel: Any) -> list[Consumer]:
        queue = Queue(self.settings.queue("sophia.ingest"), routing_key=self.settings.queue("sophia.ingest"))
        prefetch = max(10, self.settings.ingest_batch_size * 2)
        return [Consumer(channel, queues=[queue], callbacks=[self.on_message], accept=list(self.app.conf.accept_content),
                         prefetch_count=prefetch)]

    def start(self, c: Any) -> None:
        super().start(c)
        interval = max(0.005, self.settings.ingest_flush_seconds / 2)
        self.timer_entry = c.timer.call_repeatedly(interval, self.flush_if_due)

    def stop(self, c: Any) -> None:
        self._drop_timer()
        self.flush()
        super().stop(c)

    def shutdown(self, c: Any) -> None:
        self._drop_timer()
        self.flush()
        super().shutdown(c)

    def _drop_timer(self) -> None:
        if self.timer_entry is not None:
            try:
                self.timer_entry.cancel()
            except Exception:
                pass
            self.timer_entry = None

    def on_message(self, body: Any, message: Any) -> None:
        try:
            events = events_of(body)
        except ValueError:
            log.error("dropping a message on the ingest queue that is not sophia.ingest: %r", str(body)[:200])
            message.reject(requeue=False)
            return
        if not self.buffer:
            self.first_at = time.monotonic()
        self.buffer.extend(events)
        self.messages.append(message)
        if len(self.buffer) >= self.settings.ingest_batch_size:
            self.flush()

    def flush_if_due(self) -> None:
        if not self.buffer:
            return
        age = time.monotonic() - self.first_at
        if age < self.settings.ingest_flush_seconds:
            return
        if age < BACKLOG_MAX_WAIT and self._backlogged():
            return  # more events are already waiting: fill the batch instead of sending a small one
        self.flush()

    def _backlogged(self) -> bool:
        """Messages are waiting in the ingest queue, or batches in the validate queue (Redis broker;
        elsewhere never).

        Why: fetching takes one message per round trip, so within the 50 ms flush age a worker
        catching up on a backlog of single-event requests gathered ~25 events a batch, and
        every batch costs a fixed overhead in each stage and target (a MERGE per batch for
        Snowflake). While a backlog exists the batch is filled up to ``BACKLOG_MAX_WAIT``.
        """
        now = time.monotonic()
        if now - self._backlog_checked < 0.1:
            return self._backlog
        self._backlog_checked = now
        try:
            if self._redis is None:
                url = self.settings.broker_url
                if not url.startswith(("redis://", "rediss://", "unix://")):
                    self._backlog = False
                    self._backlog_checked = float("inf")
                    return False
                import redis as redis_lib

                self._redis = redis_lib.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            pipe = self._redis.pipeline(transaction=False)
            pipe.llen(self.settings.queue("sophia.ingest"))
            pipe.llen(stage_queue(self.settings, "validate"))
            waiting_ingest, waiting_validate = pipe.execute()
            # Events wait to be gathered, or batches already wait to be validated: either way a
            # small batch now would only queue behind them.
            self._backlog = int(waiting_ingest) > 0 or int(waiting_validate) > VALIDATE_BACKLOG
        except Exception as exc:  # cannot tell: send what we have
            log.debug("ingest backlog check failed: %s", exc)
            self._backlog = False
        return self._backlog

    def flush(self) -> None:
        if not self.messages:
            return
        events, messages = self.buffer, self.messages
        self.buffer, self.messages = [], []
        try:
            self.app.send_task("sophia.validate", args=[events], queue=stage_queue(self.settings, "validate"))
        except Exception as exc:
            log.error("could not hand %d events to validate, returning them to the queue: %s", len(events), exc)
            for message in messages:
                try:
                    message.requeue()
                except Exception:
                    pass
            return
        for message in messages:
            try:
                message.ack()
            except Exception as exc:  # a lost channel: the broker redelivers, stages are idempotent
                log.warning("ack failed: %s", exc)
