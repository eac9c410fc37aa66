"""The Celery configuration shared by every process that talks to the broker.

The worker's app (``sophia_tasks.worker.app``) and the web app's publisher are both
configured here, so a publisher never needs the modules that define the tasks.
"""
from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from celery import Celery, current_app
from kombu import Queue

from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.messaging.routing import INGEST_QUEUE, LANES, STAGE_QUEUES, materialize_queue
from sophia_tasks.messaging.serialization import NAME as ORJSON
from sophia_tasks.messaging.serialization import register_orjson
from sophia_tasks.settings import Settings, is_redis_url


def configure(app: Celery, settings: Settings, spec: FlowSpec) -> None:
    register_orjson()
    queues = [Queue(settings.queue(q), routing_key=settings.queue(q)) for q in STAGE_QUEUES]
    queues += [Queue(materialize_queue(settings, name, lane), routing_key=materialize_queue(settings, name, lane))
               for lane in LANES for name in spec.materializations]
    transport_options: dict[str, object] = {}
    broker_transport: str | None = None
    broker_url, broker_ssl = broker_connection(settings.broker_url)
    if is_redis_url(settings.broker_url):
        # Our Redis transport: a killed worker can never lose a message in kombu's delivery window.
        from sophia_tasks.messaging.transport import transport_options as redis_options

        transport_options = redis_options(settings, (settings.queue("sophia."),))
        broker_transport = "sophia_tasks.messaging.transport:Transport"
    elif settings.broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
        # A 202 must mean the broker has the event: wait for the publisher confirm.
        transport_options = {"confirm_publish": True, "connect_timeout": 3}
    app.conf.update(
        broker_url=broker_url,
        broker_transport_options=transport_options,
        broker_transport=broker_transport,
        broker_use_ssl=broker_ssl,
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
            "sophia.reconcile": {"queue": settings.queue("sophia.backfill")},
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
            **_reconcile_schedule(settings),
        },
    )
    bind(app, settings, spec)


def _reconcile_schedule(settings: Settings) -> dict[str, Any]:
    """sophia.reconcile with Gong API credentials only (it lists calls through Gong's API)."""
    if not (settings.gong_access_key and settings.gong_access_key_secret):
        return {}
    every = settings.reconcile_every_seconds
    return {"reconcile": {"task": "sophia.reconcile", "schedule": every, "options": {"expires": every}}}


_TLS_QUERY = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
#: py-amqp's names for the same options.
_AMQP_NAMES = {"ssl_cert_reqs": "cert_reqs", "ssl_ca_certs": "ca_certs", "ssl_certfile": "certfile",
               "ssl_keyfile": "keyfile"}


def _tls_query(query: list[tuple[str, str]]) -> dict[str, Any]:
    """The TLS options in a broker URL's query, under the Redis clients' names. The certificate is
    required unless the query says otherwise: kombu alone would accept any certificate."""
    given: dict[str, str] = {}
    for key, value in query:
        if key in _TLS_QUERY and value:
            given.setdefault(key, value)
    options: dict[str, Any] = {"ssl_cert_reqs": _CERT_REQS.get(given.get("ssl_cert_reqs", "required").lower(),
                                                               ssl.CERT_REQUIRED)}
    options.update((key, given[key]) for key in _TLS_FILES if key in given)
    return options


def broker_connection(url: str) -> tuple[str, dict[str, Any] | None]:
    """The broker URL and TLS options to connect with, from one URL.

    ``rediss://`` and ``amqps://`` take ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and
    ``ssl_cert_reqs`` (default: required) in their query. py-amqp refuses those names, so an
    ``amqps://`` URL is handed over without them and its options under py-amqp's own names."""
    if url.startswith("rediss://"):
        return url, redis_tls_options(url)
    if not url.startswith("amqps://"):
        return url, None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {_AMQP_NAMES[key]: value for key, value in _tls_query(query).items()}
    rest = urlencode([(k, v) for k, v in query if k not in _TLS_QUERY])
    return urlunsplit(parts._replace(query=rest)), options


def redis_tls_options(url: str) -> dict[str, Any] | None:
    """kombu's TLS options for a ``rediss://`` URL, from the same query the Redis clients read."""
    if not url.startswith("rediss://"):
        return None
    return _tls_query(parse_qsl(urlsplit(url).query))


def bind(app: Any, settings: Settings, spec: FlowSpec) -> None:
    """Settings and the spec travel on the app object, never in ``app.conf``: Celery prints its conf
    (``celery report``, ``celery inspect conf``, Flower's worker pages)."""
    app.sophia_settings = settings
    app.sophia_spec = spec


def is_bound(app: Any = None) -> bool:
    return getattr(app if app is not None else current_app, "sophia_settings", None) is not None


def settings_of(app: Any = None) -> Settings:
    """The settings of ``app`` (default: the current app, a worker's own)."""
    settings = getattr(app if app is not None else current_app, "sophia_settings", None)
    if settings is None:
        raise RuntimeError("this Celery app was not configured by sophia_tasks.messaging.config.configure")
    return settings


def spec_of(app: Any = None) -> FlowSpec:
    spec = getattr(app if app is not None else current_app, "sophia_spec", None)
    if spec is None:
        raise RuntimeError("this Celery app was not configured by sophia_tasks.messaging.config.configure")
    return spec


def publisher(settings: Settings, spec: FlowSpec, name: str = "sophia_tasks_publisher") -> Celery:
    """A Celery app that only sends tasks by name: the web app's and the command line's."""
    app = Celery(name, set_as_current=False)
    configure(app, settings, spec)
    return app


def sender_for(settings: Settings, spec: FlowSpec) -> Celery:
    """Inside a worker, its own app; elsewhere (the command line) a publisher for these settings.

    The current app is used only when it publishes where ``settings`` say (the same broker and
    queue prefix): a process that built ``sophia_tasks.app`` from its environment and is then
    handed other settings must not send their messages to the first broker.
    """
    app = current_app
    if is_bound(app):
        own = settings_of(app)
        if (own.broker_url, own.queue_prefix) == (settings.broker_url, settings.queue_prefix):
            return app
    return publisher(settings, spec)
