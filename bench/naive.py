"""The naive baseline: what most teams write first with Celery.

One Celery chain per event (``naive.validate`` -> ``naive.derive``), and ``derive`` fans
out one task per target (``naive.write_redis`` / ``naive.write_postgres`` /
``naive.write_snowflake``), each writing ONE row: a plain ``SET``, a single-row
``INSERT ... ON CONFLICT``, a single-row ``MERGE``. The same validation (the project's
marshmallow schema) and the same derivation (the flow spec's transform) run, so the
difference with the real pipeline is batching, not work skipped. Same Celery settings as
the project (acks_late, prefetch 1, no result backend, JSON), one queue ``naive``.

The benchmark starts a worker for it as a real process::

    celery -A bench.naive worker -Q naive --concurrency 4

and writes to its own key prefix / tables, so it never mixes with the pipeline's rows:
Redis ``naive:gong_calls_enriched:<id>``, Postgres ``naive_gong_calls_enriched``,
Snowflake ``NAIVE_GONG_CALLS_ENRICHED``.
"""
from __future__ import annotations

import os
from typing import Any

import orjson
from celery import Celery, chain

from sophia_tasks.settings import load_settings

QUEUE = "naive"
REDIS_PREFIX = "naive:gong_calls_enriched:"
PG_TABLE = "naive_gong_calls_enriched"
SF_TABLE = "NAIVE_GONG_CALLS_ENRICHED"
TTL = 86400

settings = load_settings()
app = Celery("naive", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("BENCH_NAIVE_BROKER_URL") or settings.broker_url,
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
    result_backend=None,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    timezone="UTC",
    enable_utc=True,
)

# Same retry policy shape as the project's tasks: retried with backoff, never lost on a hiccup.
RETRY = {"autoretry_for": (Exception,), "max_retries": 5, "retry_backoff": 1, "retry_backoff_max": 10}


PG_DDL = f"""CREATE TABLE IF NOT EXISTS {PG_TABLE} (
  call_id text PRIMARY KEY, flow_document jsonb NOT NULL, flow_published_at timestamptz NOT NULL,
  title text, started timestamptz, duration_seconds double precision, risk_score bigint)"""
PG_UPSERT = f"""INSERT INTO {PG_TABLE} AS t
  (call_id, flow_document, flow_published_at, title, started, duration_seconds, risk_score)
  VALUES (%s, %s::jsonb, %s::timestamptz, %s, %s::timestamptz, %s, %s)
  ON CONFLICT (call_id) DO UPDATE SET flow_document = EXCLUDED.flow_document,
    flow_published_at = EXCLUDED.flow_published_at, title = EXCLUDED.title, started = EXCLUDED.started,
    duration_seconds = EXCLUDED.duration_seconds, risk_score = EXCLUDED.risk_score
  WHERE t.flow_published_at <= EXCLUDED.flow_published_at"""
SF_DDL = (f'CREATE TABLE IF NOT EXISTS "{SF_TABLE}" ("CALL_ID" VARCHAR NOT NULL PRIMARY KEY, '
          '"FLOW_DOCUMENT" VARIANT, "FLOW_PUBLISHED_AT" TIMESTAMP_TZ, "TITLE" VARCHAR, "STARTED" TIMESTAMP_TZ, '
          '"DURATION_SECONDS" FLOAT, "RISK_SCORE" NUMBER(38,0))')
_SF_COLS = ['"CALL_ID"', '"FLOW_DOCUMENT"', '"FLOW_PUBLISHED_AT"', '"TITLE"', '"STARTED"', '"DURATION_SECONDS"',
            '"RISK_SCORE"']
SF_MERGE = (
    f'MERGE INTO "{SF_TABLE}" t USING (SELECT CAST(? AS VARCHAR) AS "CALL_ID", PARSE_JSON(?) AS "FLOW_DOCUMENT", '
    'CAST(? AS TIMESTAMP_TZ) AS "FLOW_PUBLISHED_AT", CAST(? AS VARCHAR) AS "TITLE", '
    'CAST(? AS TIMESTAMP_TZ) AS "STARTED", CAST(? AS FLOAT) AS "DURATION_SECONDS", '
    'CAST(? AS NUMBER(38,0)) AS "RISK_SCORE") s ON t."CALL_ID" = s."CALL_ID" '
    'WHEN MATCHED AND s."FLOW_PUBLISHED_AT" >= t."FLOW_PUBLISHED_AT" THEN UPDATE SET '
    + ", ".join(f"{c} = s.{c}" for c in _SF_COLS[1:])
    + f" WHEN NOT MATCHED THEN INSERT ({', '.join(_SF_COLS)}) VALUES ({', '.join('s.' + c for c in _SF_COLS)})"
)

_clients: dict[str, Any] = {}


def _client(name: str) -> Any:
    """One connection per process and target, opened after the fork and kept."""
    key = f"{name}:{os.getpid()}"
    if key in _clients:
        return _clients[key]
    if name == "redis":
        import redis

        conn: Any = redis.Redis.from_url(settings.redis_url)
    elif name == "postgres":
        from sophia_tasks.store.db import connect

        conn = connect(settings.postgres_dsn)
        conn.autocommit = True  # one row, one transaction
    else:
        import snowflake.connector

        conn = snowflake.connector.connect(**settings.snowflake.connect_kwargs())
        cur = conn.cursor()
        db, schema = settings.snowflake.database, settings.snowflake.schema
        cur.execute(f'CREATE DATABASE IF NOT EXISTS "{db}"')
        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{db}"."{schema}"')
        cur.execute(f'USE SCHEMA "{db}"."{schema}"')
    _clients[key] = conn
    return conn


def ensure_tables() -> None:
    """Create the baseline's tables once, before its worker starts (children would race on DDL)."""
    with _client("postgres").cursor() as cur:
        cur.execute(PG_DDL)
    _client("snowflake").cursor().execute(SF_DDL)
    for name in ("postgres", "snowflake"):
        conn = _clients.pop(f"{name}:{os.getpid()}")
        conn.close()


def _projected(doc: dict[str, Any]) -> list[Any]:
    from sophia_tasks.core.flowspec import Projection
    from sophia_tasks.materializers.projection import project

    projections = [Projection("title", "/metaData/title", "string"),
                   Projection("started", "/metaData/started", "timestamp"),
                   Projection("duration_seconds", "/metaData/duration", "number"),
                   Projection("risk_score", "/enrichment/risk_score", "integer")]
    return project(doc, projections)


@app.task(name="naive.validate", **RETRY)
def validate(event: dict[str, Any]) -> dict[str, Any] | None:
    from sophia_tasks.core.documents import make_document
    from sophia_tasks.schemas import get_validator

    body, errors = get_validator("gong_call")(event.get("document"))
    if errors or body is None:
        return None
    return make_document(body, {"published_at": event["published_at"], "event_id": event.get("event_id"),
                                "collection": "gong_calls", "received_at": event.get("received_at"),
                                "source": event.get("source", "webhook")})


@app.task(name="naive.derive", **RETRY)
def derive(doc: dict[str, Any] | None) -> None:
    if doc is None:
        return
    from sophia_tasks.core.documents import make_document
    from sophia_tasks.pipeline.stages import _transform

    derivation = _spec().derivations["gong_calls_enriched"]
    meta = dict(doc["_meta"], collection=derivation.name)
    derived = make_document(_transform(derivation.transform)([doc], derivation.config)[0], meta)
    write_redis.delay(derived)
    write_postgres.delay(derived)
    write_snowflake.delay(derived)


_spec_cache: list[Any] = []


def _spec() -> Any:
    if not _spec_cache:
        from sophia_tasks.flows import load_spec

        _spec_cache.append(load_spec(settings.flow_path))
    return _spec_cache[0]


def _key(doc: dict[str, Any]) -> str:
    return str(doc["metaData"]["id"])


def _with_reconnect(name: str, write: Any) -> None:
    """One retry on a fresh connection (a server restart or a killed backend), like any sane worker."""
    try:
        write(_client(name))
    except Exception:
        conn = _clients.pop(f"{name}:{os.getpid()}", None)
        try:
            conn.close()
        except Exception:
            pass
        write(_client(name))


@app.task(name="naive.write_redis", **RETRY)
def write_redis(doc: dict[str, Any]) -> None:
    _with_reconnect("redis", lambda c: c.set(REDIS_PREFIX + _key(doc), orjson.dumps(doc), ex=TTL))


@app.task(name="naive.write_postgres", **RETRY)
def write_postgres(doc: dict[str, Any]) -> None:
    from sophia_tasks.store.db import jsonb_text

    def write(conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(PG_UPSERT, (_key(doc), jsonb_text(doc), doc["_meta"]["published_at"], *_projected(doc)))

    _with_reconnect("postgres", write)


@app.task(name="naive.write_snowflake", **RETRY)
def write_snowflake(doc: dict[str, Any]) -> None:
    params = [_key(doc), orjson.dumps(doc).decode(), doc["_meta"]["published_at"], *_projected(doc)]
    _with_reconnect("snowflake", lambda c: c.cursor().execute(SF_MERGE, params))


def send(event: dict[str, Any]) -> None:
    """One chain per event."""
    chain(validate.s(event), derive.s()).apply_async(queue=QUEUE)
