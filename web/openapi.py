"""The OpenAPI 3.1 document of the web app (served at /openapi.json, used for fuzzing)."""
from __future__ import annotations

import re
from typing import Any

from sophia_tasks.core.flowspec import FlowSpec

_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string"}, "detail": {}}}


def _resp(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def _event_type(spec: FlowSpec | None) -> dict[str, Any]:
    """The envelope types the spec routes: its exact names, and each pattern as a regex."""
    if spec is None:
        return {"type": "string"}
    exact = [r.pattern for r in spec.routes.routes if r.exact]
    patterns = ["^" + ".*".join(re.escape(p) for p in r.pattern.split("*")) + "$"
                for r in spec.routes.routes if not r.exact]
    options: list[dict[str, Any]] = ([{"enum": exact}] if exact else []) + [{"pattern": p} for p in patterns]
    return {"type": "string", "description": "A type the flow spec routes (exact names win, then the longest "
                                             "* pattern); any other type is a 400 naming the known ones",
            **({"anyOf": options} if options else {})}


def document(spec: FlowSpec | None = None) -> dict[str, Any]:
    """The OpenAPI document; with ``spec``, the routed types, wrapped forms and collections are its own."""
    document = {"type": "object", "additionalProperties": True,
                "description": "A document of the collection; its key and schema are checked by the pipeline, "
                               "which dead-letters a document failing them. `_meta.op: \"d\"` marks a delete."}
    envelope = {"type": "object", "required": ["type", "data"],
                "properties": {"type": _event_type(spec), "id": {"type": "string"},
                               "occurred_at": {"type": "string"}, "data": document}}
    wrappers = list(spec.routes.wrappers) if spec is not None else []
    forms = [{"type": "object", "required": [name], "description": f"Typeless: stands for {spec.routes.wrappers[name]}",
              "properties": {name: document, "isTest": {"type": "boolean"}}} for name in wrappers if spec]
    wrapped: dict[str, Any] = {"oneOf": forms} if forms else {
        "type": "object", "description": "A typeless form the flow spec's `wrappers` declare"}
    item = {"oneOf": [envelope, wrapped]}
    body = {"oneOf": [envelope, wrapped, {"type": "array", "items": item, "minItems": 1, "maxItems": 1000}]}
    documents = {"oneOf": [document, {"type": "array", "items": document, "minItems": 1, "maxItems": 1000}]}
    accepted = {"type": "object", "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["accepted", "duplicate"]},
                               "event_id": {"type": "string"},
                               "event_ids": {"type": "array", "items": {"type": "string"}}}}
    # Any one of: a webhook token, a Standard Webhooks signature, a Gong signed JWT.
    write_security = [{"bearer": []}, {"webhookId": [], "webhookTimestamp": [], "webhookSignature": []},
                      {"gongJwt": []}]
    webhook = {
        "summary": "Capture events: each envelope goes to the collection its type is routed to",
        "security": write_security,
        "requestBody": {"required": True, "content": {"application/json": {"schema": body},
                                                      "application/x-ndjson": {"schema": {"type": "string"}}}},
        "responses": {
            "202": _resp("Accepted: on the broker", accepted),
            "200": _resp("Duplicate delivery within the dedupe window", accepted),
            "400": _resp("Bad JSON or envelope, or a type with no route (the detail names the known types); "
                         "nothing of the request is enqueued", _ERROR),
            "401": _resp("Missing credentials", _ERROR),
            "403": _resp("Wrong credentials", _ERROR),
            "413": _resp("Body over SOPHIA_MAX_BODY_BYTES", _ERROR),
            "415": _resp("Not a JSON content type", _ERROR),
            "429": _resp("Rate limited (see Retry-After)", _ERROR),
            "503": _resp("Broker unavailable (see Retry-After)", _ERROR),
        },
    }
    capture = {
        "summary": "Capture documents into one collection of the flow spec",
        "parameters": [{"name": "collection", "in": "path", "required": True,
                        "schema": {"type": "string", **({"enum": list(spec.collections)} if spec else {})},
                        "description": "A collection of the flow spec (not a derivation)"}],
        "security": write_security,
        "requestBody": {"required": True, "content": {"application/json": {"schema": documents},
                                                      "application/x-ndjson": {"schema": {"type": "string"}}}},
        "responses": dict(webhook["responses"], **{
            "400": _resp("Bad JSON, a document that is not an object, or an unknown collection (the detail names "
                         "the known ones); nothing of the request is enqueued", _ERROR)}),
    }
    read_refusals = {"401": _resp("Missing credentials", _ERROR),
                     "403": _resp("Not a read token (a webhook token cannot read)", _ERROR),
                     "429": _resp("Rate limited (see Retry-After)", _ERROR)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "sophia-tasks webhook", "version": "1"},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "A webhook token (SOPHIA_WEBHOOK_TOKENS): sends events, cannot read"},
            "webhookId": {"type": "apiKey", "in": "header", "name": "webhook-id",
                          "description": "Standard Webhooks: the message id (signed with SOPHIA_WEBHOOK_SECRET)"},
            "webhookTimestamp": {"type": "apiKey", "in": "header", "name": "webhook-timestamp",
                                 "description": "Standard Webhooks: unix seconds, within 5 minutes"},
            "webhookSignature": {"type": "apiKey", "in": "header", "name": "webhook-signature",
                                 "description": "Standard Webhooks: v1,<base64 HMAC-SHA256>"},
            "gongJwt": {"type": "apiKey", "in": "header", "name": "Authorization",
                        "description": "A Gong automation rule's signed JWT (RS256; body_sha256, exp, webhook_url), "
                                       "checked with SOPHIA_GONG_JWT_PUBLIC_KEY"},
            "read": {"type": "http", "scheme": "bearer",
                     "description": "A read token (SOPHIA_READ_TOKENS): documents and /metrics"},
        }},
        "paths": {
            "/estuary/webhook": {"post": dict(webhook, operationId="captureEstuary")},
            "/webhooks/gong": {"post": dict(webhook, operationId="captureGong")},
            "/v1/collections/{collection}/events": {"post": dict(capture, operationId="captureDocuments")},
            "/healthz": {"get": {"summary": "Process up", "responses": {"200": _resp("ok")}}},
            "/readyz": {"get": {"summary": "Broker, Redis and Postgres reachable",
                                "responses": {"200": _resp("ready"), "503": _resp("not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [{"read": []}],
                                 "responses": {"200": {"description": "text"}, **read_refusals}}},
            "/v1/collections/{collection}/documents/{key}": {"get": {
                "summary": "A document from the Redis hot cache",
                "parameters": [{"name": "collection", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}],
                "security": [{"read": []}],
                "responses": {"200": _resp("the document", {"type": "object"}), "404": _resp("absent", _ERROR),
                              **read_refusals}}},
            "/v1/events/{event_id}/trace": {"get": {
                "summary": "Where an event is: receipt, dedupe, batch, validate, derive, each target's version, "
                           "time and attempts, dead letters",
                "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "security": [{"read": []}],
                "responses": {"200": _resp("the trace", {"type": "object"}),
                              "404": _resp("unknown, or older than the trace window (the detail says how far "
                                           "back traces go)", _ERROR),
                              "503": _resp("Redis or PostgreSQL unreachable", _ERROR), **read_refusals}}},
        },
    }
