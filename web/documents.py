"""Read a document back from the Redis hot cache."""
from __future__ import annotations

import logging
from typing import Any

import redis as redis_lib
from flask import Blueprint, Response, jsonify

from web.access import refuse_read
from web.services import services

log = logging.getLogger(__name__)

bp = Blueprint("documents", __name__)


@bp.get("/v1/collections/<collection>/documents/<key>")
def get_document(collection: str, key: str) -> Any:
    refused = refuse_read()
    if refused is not None:
        return refused
    svc = services()
    binding = None
    for mat in svc.spec.materializations.values():
        if mat.endpoint == "redis":
            binding = mat.binding_for(collection)
            if binding is not None:
                break
    if binding is None:
        response = jsonify({"error": "not found", "detail": f"collection {collection!r} has no Redis binding"})
        response.status_code = 404
        return response
    try:
        raw = svc.redis.get(f"{binding.key_prefix}{key}")
    except redis_lib.RedisError:
        response = jsonify({"error": "hot cache unavailable"})
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response
    if raw is None:
        response = jsonify({"error": "not found", "detail": f"no document {key!r} in {collection}"})
        response.status_code = 404
        return response
    # Refuse to serve what is not a JSON object (a value written by something else, or cut short).
    # Only its ends are checked: the materializer wrote the text with orjson, and parsing a whole
    # document again was a tenth of a read's CPU.
    if raw[:1] != b"{" or raw.rstrip()[-1:] != b"}":
        log.error("not a JSON object at %s%s (%d bytes): refusing to serve it", binding.key_prefix, key, len(raw))
        response = jsonify({"error": "stored document is not JSON", "detail": f"{key!r} in {collection}"})
        response.status_code = 500
        return response
    return Response(raw, content_type="application/json")
