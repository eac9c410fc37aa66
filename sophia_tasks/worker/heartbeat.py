"""The worker node's heartbeat (``sophia_tasks.observe.workers``), from its main process.

A consumer step, so it beats only while the node's consumer is connected to the broker;
a node that lost its broker, or died, goes quiet and readiness sees it.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import redis as redis_lib
from celery import bootsteps
from celery.worker import state

from sophia_tasks.messaging.config import settings_of
from sophia_tasks.observe.workers import HEARTBEAT_SECONDS, forget_node, forget_stale, record_heartbeat

log = logging.getLogger(__name__)


class WorkerHeartbeat(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.settings = settings_of(c.app)
        self.entry: Any = None
        self.client: redis_lib.Redis | None = None
        self.node = str(getattr(c, "hostname", "") or "worker")
        self.concurrency = 0
        self.last_total = -1
        self.consumed_at: float | None = None
        self.beats = 0

    def start(self, c: Any) -> None:
        self.node = str(getattr(c, "hostname", "") or self.node)
        controller = getattr(c, "controller", None)
        self.concurrency = int(getattr(controller, "concurrency", 0) or 0)
        if self.client is None:
            self.client = redis_lib.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1,
                                                   socket_timeout=1)
        self.beat()
        self.entry = c.timer.call_repeatedly(HEARTBEAT_SECONDS, self.beat)

    def beat(self) -> None:
        """Consumed now if a task finished since the last beat or a pool process is free."""
        now = time.time()
        total = state.all_total_count[0]
        active = len(state.active_requests)
        if total != self.last_total or not self.concurrency or active < self.concurrency:
            self.consumed_at = now
        self.last_total = total
        try:
            assert self.client is not None
            record_heartbeat(self.client, self.settings, self.node, self.consumed_at, active, self.concurrency, now)
            self.beats += 1
            if self.beats % 300 == 1:
                forget_stale(self.client, self.settings, now)
        except redis_lib.RedisError as exc:  # readiness will see the silence; the worker goes on
            log.warning("worker heartbeat not recorded: %s", exc)

    def stop(self, c: Any) -> None:
        if self.entry is not None:
            try:
                self.entry.cancel()
            except Exception:
                pass
            self.entry = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        if self.client is not None:
            try:
                forget_node(self.client, self.settings, self.node)
            except redis_lib.RedisError:
                pass
