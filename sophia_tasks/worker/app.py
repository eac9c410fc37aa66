"""The worker's Celery application, built by a factory (as pypi/warehouse builds its own).

``create_app`` configures Celery from the settings and the flow spec
(``sophia_tasks.messaging.config``, shared with every publisher) and adds the ingest
batcher to the consumer. The task modules imported here register their tasks with
``shared_task``, so they never import the app. ``celery -A sophia_tasks`` finds the app
through ``sophia_tasks.app``.
"""
from __future__ import annotations

from celery import Celery
from celery.signals import setup_logging

# Task modules (and signal handlers): imported for what they register.
from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.flows import load_spec
from sophia_tasks.ingest.batcher import IngestBatcher
from sophia_tasks.logs import celery_setup_logging, quiet_third_party
from sophia_tasks.messaging.config import configure
from sophia_tasks.observe import sentry  # noqa: F401  (Sentry in workers and beat)
from sophia_tasks.observe import tasks as observe_tasks  # noqa: F401  (sophia.alerts)
from sophia_tasks.ops import tasks as ops_tasks  # noqa: F401  (backfill, replay, purge_retention, purge_journal)
from sophia_tasks.pipeline import tasks as pipeline_tasks  # noqa: F401  (ingest, validate, derive, materialize)
from sophia_tasks.settings import Settings, load_settings
from sophia_tasks.worker import signals  # noqa: F401  (before the pool forks; stale bulkhead slots)
from sophia_tasks.worker.heartbeat import WorkerHeartbeat


def create_app(settings: Settings | None = None, spec: FlowSpec | None = None) -> Celery:
    settings = settings or load_settings()
    spec = spec or load_spec(settings.flow_path)
    quiet_third_party()
    # Celery leaves logging to us once this signal has a receiver: one set-up for every process.
    setup_logging.connect(celery_setup_logging, weak=False)
    app = Celery("sophia_tasks", set_as_current=True)
    configure(app, settings, spec)
    app.steps["consumer"].add(IngestBatcher)
    app.steps["consumer"].add(WorkerHeartbeat)  # live workers for /readyz and status
    return app
