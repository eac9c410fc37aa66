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

On a Redis broker the webhook does not publish ingest messages at all: it appends to
the ingest buffer (``sophia_tasks.ingest.buffer``), and this step's timer cuts the
buffer into batches inside Redis and publishes one validate task per cut, carrying only
the batch's key. The queue consumer stays for other brokers and for messages already
queued by an older web process.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from kombu import Consumer, Queue

from sophia_tasks.ingest.buffer import IngestBuffer, buffer_for, coalesced_buffers, target_buffer
from sophia_tasks.messaging.config import settings_of, spec_of
from sophia_tasks.messaging.routing import materialize_message, stage_queue

#: At most this many cuts are published per timer tick (the main process also fetches tasks).
MAX_CUTS_PER_TICK = 20
#: Seconds between sweeps for cuts whose validate task was never published.
CUT_SWEEP_EVERY = 5.0
#: Seconds between looks at the target buffers (their batches wait for rows or a second anyway).
TARGET_CUT_EVERY = 0.05

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
        self.settings = settings_of(c.app)
        self.buffer: list[dict[str, Any]] = []
        self.messages: list[Any] = []
        self.first_at = 0.0
        self.timer_entry: Any = None
        self._redis: Any = None
        self._backlog = False
        self._backlog_checked = 0.0
        self.cut_timer: Any = None
        self.events_buffer: IngestBuffer | None = None
        self._last_cut_sweep = 0.0
        self._last_cut_error = -1e9
        #: (target, collection, lane, buffer) for every coalesced target's buffer.
        self.target_buffers: list[tuple[str, str, str, IngestBuffer]] = []
        self._last_target_cut = 0.0

    def get_consumers(self, channel: Any) -> list[Consumer]:
        queue = Queue(self.settings.queue("sophia.ingest"), routing_key=self.settings.queue("sophia.ingest"))
        prefetch = max(10, self.settings.ingest_batch_size * 2)
        return [Consumer(channel, queues=[queue], callbacks=[self.on_message],
                         accept=list(self.app.conf.accept_content),
                         prefetch_count=prefetch)]

    def start(self, c: Any) -> None:
        super().start(c)
        interval = max(0.005, self.settings.ingest_flush_seconds / 2)
        self.timer_entry = c.timer.call_repeatedly(interval, self.flush_if_due)
        try:
            self.events_buffer = buffer_for(self.settings)
        except Exception as exc:  # a later start (reconnect) tries again
            log.error("ingest buffer unavailable: %s", exc)
        if self.events_buffer is not None:
            client = self.events_buffer.client
            self.target_buffers = [
                (target, collection, lane, target_buffer(self.settings, client, target, collection, lane))
                for target, collection, lane in coalesced_buffers(self.settings, spec_of(self.app))]
        if self.events_buffer is not None and self.cut_timer is None:
            self.cut_timer = c.timer.call_repeatedly(interval, self.cut_due)

    def stop(self, c: Any) -> None:
        self._drop_timer()
        self.flush()
        super().stop(c)

    def shutdown(self, c: Any) -> None:
        self._drop_timer()
        self.flush()
        super().shutdown(c)

    def _drop_timer(self) -> None:
        for name in ("timer_entry", "cut_timer"):
            entry = getattr(self, name)
            if entry is not None:
                try:
                    entry.cancel()
                except Exception:
                    pass
                setattr(self, name, None)

    def cut_due(self) -> None:
        """Cut what is due from the ingest buffer and publish a validate task per cut."""
        buf = self.events_buffer
        if buf is None:
            return
        validate_queue = stage_queue(self.settings, "validate")
        try:
            for _ in range(MAX_CUTS_PER_TICK):
                ref = buf.cut(self.settings.ingest_batch_size, self.settings.ingest_flush_seconds,
                              BACKLOG_MAX_WAIT, validate_queue, VALIDATE_BACKLOG)
                if ref is None:
                    break
                self._publish_cut(buf, ref, validate_queue)
            now = time.monotonic()
            if self.target_buffers and now - self._last_target_cut >= TARGET_CUT_EVERY:
                self._last_target_cut = now
                self.cut_targets()
            if now - self._last_cut_sweep >= CUT_SWEEP_EVERY:
                self._last_cut_sweep = now
                for ref in buf.stale_cuts():
                    log.warning("publishing ingest batch %s (%d events): its cut was never published",
                                ref["$events"], ref["n"])
                    self._publish_cut(buf, ref, validate_queue)
                for target, collection, lane, tbuf in self.target_buffers:
                    for ref in tbuf.stale_cuts():
                        log.warning("publishing %s batch %s (%d documents): its cut was never published", target,
                                    ref["$events"], ref["n"])
                        self._publish_target_cut(tbuf, ref, target, collection, lane)
        except Exception as exc:  # Redis or the broker is away: the next tick tries again; cuts stay pending
            now = time.monotonic()
            if now - self._last_cut_error >= 10.0:  # once per 10 s, not once per tick
                self._last_cut_error = now
                log.warning("cutting the ingest buffer failed (retrying every tick): %s", exc)

    def cut_targets(self) -> None:
        """One materialize task per due cut of a coalesced target's buffer (rows or age)."""
        for target, collection, lane, tbuf in self.target_buffers:
            for _ in range(MAX_CUTS_PER_TICK):
                ref = tbuf.cut(self.settings.coalesce_rows, self.settings.coalesce_seconds, 0.0, tbuf.buffer_key, 0)
                if ref is None:
                    break
                self._publish_target_cut(tbuf, ref, target, collection, lane)

    def _publish_target_cut(self, buf: IngestBuffer, ref: dict[str, Any], target: str, collection: str,
                            lane: str) -> None:
        args, kwargs, queue = materialize_message(self.settings, target, collection, ref, lane=lane)
        self.app.send_task("sophia.materialize", args=args, kwargs=kwargs, queue=queue)
        buf.published(ref)

    def _publish_cut(self, buf: IngestBuffer, ref: dict[str, Any], validate_queue: str) -> None:
        """One validate task for the cut; only then may the sweep forget it."""
        self.app.send_task("sophia.validate", args=[ref], queue=validate_queue)
        buf.published(ref)

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
