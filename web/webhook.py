"""The capture endpoint: authenticate, parse, dedupe, enqueue, answer.

The 202 goes out only after the ingest message is on the broker; if the broker
cannot take it the sender gets a 503 with Retry-After and retries, so an event is
never acknowledged and then lost.
"""
from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Blueprint, Response, request

from sophia_tasks.core.documents import format_version, normalize_version, utcnow
from sophia_tasks.ingest.envelope import EnvelopeError, UnsupportedMediaType, parse_body
from sophia_tasks.ingest.events import make_event
from web.access import auth_refused, error, rate_refused
from web.auth import AuthError, authenticate
from web.services import BrokerUnavailable, services

log = logging.getLogger(__name__)

bp = Blueprint("webhook", __name__)
COLLECTION = "gong_calls"


@bp.post("/estuary/webhook")
@bp.post("/webhooks/gong")
def receive() -> Any:
    svc = services()
    settings = svc.settings
    received_at = utcnow()
    length = request.content_length
    if length is not None and length > settings.max_body_bytes:
        return error(413, "body too large", f"limit is {settings.max_body_bytes} bytes")
    # A chunked body has no Content-Length. Werkzeug's max-length stream stops reading *at* its
    # limit without an error, so with the limit itself a body over it would be silently cut to
    # the limit and parsed; reading at most one byte more tells "exactly the limit" from "over".
    request.max_content_length = settings.max_body_bytes + 1
    raw = request.get_data(cache=True)
    if len(raw) > settings.max_body_bytes:
        return error(413, "body too large", f"limit is {settings.max_body_bytes} bytes")

    try:
        principal = authenticate(svc.auth, request.headers, raw, lambda: request.base_url, request.path)
    except AuthError as exc:
        return auth_refused(exc)
    refused = rate_refused(svc, principal)
    if refused is not None:
        return refused

    webhook_id = request.headers.get("webhook-id")
    try:
        parsed = parse_body(raw, request.headers.get("Content-Type"), webhook_id)
    except UnsupportedMediaType as exc:
        return error(415, str(exc), getattr(exc, "detail", None))
    except EnvelopeError as exc:
        return error(400, str(exc), getattr(exc, "detail", None))

    header_time = request.headers.get("webhook-timestamp") if principal.method == "standard_webhooks" else None
    received = format_version(received_at)
    events = []
    for ev in parsed:
        published = ev.occurred_at or header_time
        events.append(make_event(COLLECTION, ev.call, ev.event_id, received,
                                 normalize_version(published, received_at) if published else received,
                                 source="webhook", is_test=ev.is_test))

    ids = [e["event_id"] for e in events]
    try:
        fresh = svc.accept(events, COLLECTION, credential=principal.subject)
    except BrokerUnavailable:
        return error(503, "broker unavailable, retry later", retry_after=5)
    new_events = [e for e, is_new in zip(events, fresh, strict=False) if is_new]
    if not new_events:
        body: dict[str, Any] = {"status": "duplicate"}
        if len(ids) == 1:
            body["event_id"] = ids[0]
        else:
            body["event_ids"] = ids
        return answer(body, 200)

    body = {"status": "accepted"}
    if len(parsed) == 1 and parsed[0].index is None:
        body["event_id"] = ids[0]
    else:
        body["event_ids"] = ids
        dups = [e["event_id"] for e, is_new in zip(events, fresh, strict=False) if not is_new]
        if dups:
            body["duplicates"] = dups
    if any(e["is_test"] for e in new_events):
        body["test"] = True
    return answer(body, 202)


def answer(body: dict[str, Any], status: int) -> Response:
    """The common answers, encoded by orjson (Flask's jsonify is a tenth of the handler's CPU)."""
    return Response(orjson.dumps(body), status=status, mimetype="application/json")

