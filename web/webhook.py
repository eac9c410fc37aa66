"""The capture endpoints: authenticate, parse, dedupe, enqueue, answer.

``/estuary/webhook`` (and ``/webhooks/gong``) take envelopes routed by the flow spec's ``routes``;
``/v1/collections/<collection>/events`` takes documents of one collection. Both share every rule:
the body limit, auth, rate limit, dedupe, the answers and the durability. The 202 goes out only
after the events are on the broker; if the broker cannot take them the sender gets a 503 with
Retry-After and retries, so an event is never acknowledged and then lost.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import orjson
from flask import Blueprint, Response, request

from sophia_tasks.core.documents import format_version, normalize_version, utcnow
from sophia_tasks.ingest.envelope import EnvelopeError, Event, UnsupportedMediaType, parse_body, parse_documents
from sophia_tasks.ingest.events import make_event
from web.access import auth_refused, error, rate_refused
from web.auth import AuthError, authenticate
from web.services import BrokerUnavailable, services

log = logging.getLogger(__name__)

bp = Blueprint("webhook", __name__)


@bp.post("/estuary/webhook")
@bp.post("/webhooks/gong")
def receive() -> Any:
    routes = services().spec.routes
    return capture(lambda raw, content_type, webhook_id: parse_body(raw, content_type, webhook_id, routes),
                   source="webhook")


@bp.post("/v1/collections/<collection>/events")
def receive_documents(collection: str) -> Any:
    spec = services().spec

    def check() -> Any | None:
        if collection in spec.collections:
            return None
        known = ", ".join(spec.collections)
        what = "a derivation: capture into its source collection" if collection in spec.derivations else \
            "not a collection of the flow spec"
        return error(400, "unknown collection", f"{collection[:100]!r} is {what}; known collections: {known}")

    return capture(lambda raw, content_type, webhook_id: parse_documents(raw, content_type, collection, webhook_id),
                   source="capture", check=check)


Parse = Callable[[bytes, "str | None", "str | None"], list[Event]]


def capture(parse: Parse, source: str, check: Callable[[], Any | None] | None = None) -> Any:
    """The one capture path: limit, authenticate, rate-limit, ``check`` the request (e.g. the collection),
    parse (every item routed, or the whole body refused), dedupe and enqueue, answer."""
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
    if check is not None:
        refused = check()
        if refused is not None:
            return refused

    webhook_id = request.headers.get("webhook-id")
    try:
        parsed = parse(raw, request.headers.get("Content-Type"), webhook_id)
    except UnsupportedMediaType as exc:
        return error(415, str(exc), getattr(exc, "detail", None))
    except EnvelopeError as exc:
        return error(400, str(exc), getattr(exc, "detail", None))

    header_time = request.headers.get("webhook-timestamp") if principal.method == "standard_webhooks" else None
    received = format_version(received_at)
    events = []
    for ev in parsed:
        published = ev.occurred_at or header_time
        events.append(make_event(str(ev.collection), ev.document, ev.event_id, received,
                                 normalize_version(published, received_at) if published else received,
                                 source=source, is_test=ev.is_test, op=ev.op))

    ids = [e["event_id"] for e in events]
    try:
        fresh = accept_by_collection(events, principal.subject)
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


def accept_by_collection(events: list[dict[str, Any]], credential: str | None = None) -> list[bool]:
    """``Services.accept`` once per collection of the request (counts are per collection), flags in order.

    A broker that fails part-way answers 503: the groups accepted before it are deduped, so the
    sender's retry hands on only the rest, and nothing is lost or counted twice."""
    svc = services()
    first = events[0]["collection"]
    if all(e["collection"] == first for e in events):
        return svc.accept(events, first, credential=credential)
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        groups.setdefault(e["collection"], []).append(i)
    flags = [False] * len(events)
    for collection, positions in groups.items():
        for i, flag in zip(positions, svc.accept([events[i] for i in positions], collection,
                                                                 credential=credential), strict=True):
            flags[i] = flag
    return flags


def answer(body: dict[str, Any], status: int) -> Response:
    """The common answers, encoded by orjson (Flask's jsonify is a tenth of the handler's CPU)."""
    return Response(orjson.dumps(body), status=status, mimetype="application/json")

