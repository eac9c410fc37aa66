"""``GET /v1/events/<id>/trace``: where an event is (``sophia_tasks.observe.trace``), behind a read token."""
from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg2
import redis as redis_lib
from flask import Blueprint, Response

from sophia_tasks.observe.trace import not_found_message, reader_for
from web.access import error, refuse_read
from web.services import services

log = logging.getLogger(__name__)

bp = Blueprint("trace", __name__)


@bp.get("/v1/events/<event_id>/trace")
def get_trace(event_id: str) -> Any:
    refused = refuse_read()
    if refused is not None:
        return refused
    svc = services()
    try:
        trace = reader_for(svc.settings, svc.spec, svc.redis).event(event_id)
    except (redis_lib.RedisError, psycopg2.Error) as exc:
        log.warning("trace of %s unavailable: %s", event_id, exc)
        return error(503, "trace stores unavailable, retry later", retry_after=5)
    if trace is None:
        return error(404, "not found", not_found_message(svc.settings, f"event {event_id!r}"))
    return Response(orjson.dumps(trace, default=str), status=200, mimetype="application/json")
