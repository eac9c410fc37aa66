"""Liveness, readiness, metrics and the OpenAPI document."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from web.access import refuse_read
from web.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Any:
    """Ready when the broker, Redis and PostgreSQL answer, and some worker consumes while events wait."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    try:
        from sophia_tasks.store.db import connect

        conn = connect(svc.settings.postgres_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            conn.close()
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    workers: list[dict[str, Any]] | None = None
    reason: str | None = None
    if checks["redis"] == "ok" and checks["broker"] == "ok":
        from sophia_tasks.observe.workers import cached_worker_readiness

        try:
            verdict = cached_worker_readiness(svc.settings, svc.spec, svc.redis)
            workers = verdict.workers
            checks["workers"] = "ok" if verdict.ok else "not consuming"
            reason = verdict.reason
        except Exception as exc:  # redis or broker errors between the checks above and this one
            checks["workers"] = f"unknown: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ok else "not ready", "checks": checks, "workers": workers}
    if not ok:
        body["reason"] = reason or "; ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")
    response = jsonify(body)
    response.status_code = 200 if ok else 503
    if not ok:
        response.headers["Retry-After"] = "5"
    return response


@bp.get("/metrics")
def metrics() -> Any:
    """Prometheus scrapes with a read token (``authorization: {credentials_file: ...}``)."""
    from web.metrics import render

    refused = refuse_read()
    if refused is not None:
        return refused
    body, content_type = render(services())
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi() -> Any:
    from web.openapi import document

    return jsonify(document(services().spec))
