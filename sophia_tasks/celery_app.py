"""The Celery application: configuration only; the tasks live in ``sophia_tasks.tasks``."""
from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu import Queue

from sophia_tasks.flowspec import FlowSpec, load_spec
from sophia_tasks.serialization import NAME as ORJSON, register_orjson
from sophia_tasks.settings import Settings, load_settings

STAGE_QUEUES = ("sophia.validate", "sophia.derive", "sophia.ops", "sophia.backfill")
INGEST_QUEUE = "sophia.ingest"


LANES = ("live", "bulk")


def materialize_queue(settings: Settings, target: str, lane: str = "live") -> str:
    """Each target has its own queue per lane, so a slow target or a backfill never delays live writes."""
    if lane == "bulk":
        return settings.queue(f"sophia.backfill.materialize.{target}")
    return settings.queue(f"sophia.materialize.{target}")


def materialize_message(settings: Settings, target: str, collection: str, documents: Any, attempt: int = 1,
                        lane: str = "live") -> tuple[list[Any], dict[str, Any], str]:
    """The args, kwargs and queue of a ``sophia.materialize`` message. Only non-default routing
    travels in it. The tasks send it, and so does the batcher in the worker's main process."""
    kwargs: dict[str, Any] = {"attempt": attempt}
    if lane != "live":
        kwargs["lane"] = lane
    return [target, collection, documents], kwargs, materialize_queue(settings, target, lane)


def stage_queue(settings: Settings, stage: str, lane: str = "live") -> str:
    """validate and derive of the bulk lane (backfill, rebuild) share the lower-priority backfill queue."""
    if lane == "bulk":
        return settings.queue("sophia.backfill")
    return settings.queue(f"sophia.{stage}")


def configure(app: Celery, settings: Settings, spec: FlowSpec) -> None:
    register_orjson()
    queues = [Queue(settings.queue(q), routing_key=settings.queue(q)) for q in STAGE_QUEUES]
    queues += [Queue(materialize_queue(settings, name, lane), routing_key=materialize_queue(settings, name, lane))
               for lane in LANES for name in spec.materializations]
    transport_options: dict[str, object] = {}
    broker_transport: str | None = None
    if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        # Our Redis transport: a killed worker can never lose a message in kombu's delivery window.
        from sophia_tasks.broker import transport_options as redis_options

        transport_options = redis_options(settings, (settings.queue("sophia."),))
        if not settings.broker_url.startswith("rediss://"):  # rediss keeps kombu's own TLS checks
            broker_transport = "sophia_tasks.broker:Transport"
    elif settings.broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
        # A 202 must mean the broker has the event: wait for the publisher confirm.
        transport_options = {"confirm_publish": True, "connect_timeout": 3}
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport_options,
        broker_transport=broker_transport,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        result_backend=None,
        task_ignore_result=True,
        task_serializer=ORJSON,
        result_serializer="json",
        accept_content=[ORJSON, "json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_queues=queues,
        task_default_queue=settings.queue("sophia.ops"),
        task_create_missing_queues=True,
        task_routes={
            "sophia.validate": {"queue": settings.queue("sophia.validate")},
            "sophia.derive": {"queue": settings.queue("sophia.derive")},
            "sophia.backfill": {"queue": settings.queue("sophia.backfill")},
            "sophia.ingest": {"queue": settings.queue(INGEST_QUEUE)},
        },
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        # KB: a pool child past 250 MB is replaced after its task, so none settles above the 300 MB
        # budget (a batch of 500 decoded calls is ~30-60 MB of Python objects on top of ~120 MB of code).
        worker_max_memory_per_child=250_000,
        timezone="UTC",
        enable_utc=True,
        beat_schedule={
            "purge-retention": {"task": "sophia.purge_retention", "schedule": 3600.0},
            # Slack alerts (thresholds in the flow spec's alerts: section); a late run is dropped, not queued.
            "alerts": {"task": "sophia.alerts", "schedule": settings.alerts_interval_seconds,
                       "options": {"expires": settings.alerts_interval_seconds}},
            "purge-journal": {"task": "sophia.purge_journal", "schedule": 3600.0},
        },
    )
    app.conf.sophia_settings = settings
    app.conf.sophia_spec = spec


def _quiet_connector_logs() -> None:
    """The Snowflake connector logs every internal retry with a traceback at WARNING; our
    materializer reports the outcome once per attempt instead."""
    for name in ("snowflake.connector", "snowflake.connector.vendored.urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def create_celery(settings: Settings | None = None, spec: FlowSpec | None = None) -> Celery:
    settings = settings or load_settings()
    spec = spec or load_spec(settings.flow_path)
    _quiet_connector_logs()
    app = Celery("sophia_tasks", set_as_current=True)
    configure(app, settings, spec)
    from sophia_tasks.batching import IngestBatcher

    app.steps["consumer"].add(IngestBatcher)
    return app


app = create_celery()

# Task modules register themselves on ``app`` when imported.
from sophia_tasks import tasks  # noqa: E402,F401
# -- other task modules: one import line each below --
from sophia_tasks import alerts, observability  # noqa: E402,F401  (sophia.alerts; Sentry in workers and beat)
from sophia_tasks import backfill  # noqa: E402,F401  (sophia.backfill, sophia.purge_journal)
