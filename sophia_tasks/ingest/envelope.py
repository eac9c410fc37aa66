"""Turn a capture request body into events: pure parsing, no I/O, no Flask.

Two entry points, one set of body rules:

* :func:`parse_body` (the webhook) reads envelopes and routes each by the flow spec
  (``sophia_tasks.core.flowspec.Routes``):

  1. ``{"type": "<type>", "id"?: str, "occurred_at"?: ..., "data": <document>}``: the spec's
     ``routes`` name the collection of the type (exact names first, then the longest ``*``
     pattern), and whether it is a delete (``op: delete``) (``kind="envelope"``);
  2. ``{"<wrapper field>": <document>, "isTest"?: bool}``: a typeless form the spec's ``wrappers``
     declare, read as the type they name (``kind="wrapped"``);
  3. a batch: a JSON array whose items are 1 or 2, or NDJSON (one such object per non-empty line).

  A type no route matches is an :class:`EnvelopeError` naming the known types and patterns, and the
  whole request is refused (nothing of it is enqueued).

* :func:`parse_documents` (``POST /v1/collections/<collection>/events``) reads documents: one JSON
  object, a JSON array of them, or NDJSON (``kind="document"``).

Either way a document whose ``_meta.op`` is ``"d"`` is a delete (``op="d"``).

Content types:

* ``application/json``, ``text/json`` and ``application/*+json`` are parsed as one JSON document
  (no NDJSON fallback: a sender that declares JSON gets a JSON error);
* ``application/x-ndjson`` (also ``application/ndjson``, ``application/jsonl``,
  ``application/jsonlines``, ``application/x-jsonlines``) is always parsed as NDJSON;
* no content type, ``application/x-www-form-urlencoded`` (what ``curl -d`` sends),
  ``text/plain`` and ``application/octet-stream`` are *sniffed*: the body is parsed as JSON, and
  only if that fails and the body has at least two non-empty lines that all start with ``{``
  is it parsed as NDJSON (so a broken pretty-printed object still gets the JSON error);
* a declared JSON/NDJSON type with a charset other than UTF-8/ASCII, and every other media type
  (``text/html``, ``application/xml``, ``multipart/form-data``, ``image/png``...) raise
  :class:`UnsupportedMediaType` (HTTP 415).

Event ids: the ``webhook-id`` header, else the envelope ``id``, else the SHA-256 of the raw body.
In a batch, item *i* gets ``"<webhook-id>:<i>"``; without a header, its envelope ``id`` or the
SHA-256 of the item's canonical JSON (sorted keys), so redelivering one item dedupes. A
document of the collection endpoint has no envelope id: the header (``:<i>`` in a batch), else the
SHA-256 of its canonical JSON, single or batched.

Only the body's shape is checked here: a document must be a JSON object. Its key and its schema are
the collection's, checked by the pipeline's validate stage, which dead-letters a document failing
them with every error (so a delete carrying only its key is never refused here).
Anything wrong raises :class:`EnvelopeError` (HTTP 400) and nothing else, for any input bytes.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import orjson

from sophia_tasks.core.flowspec import Route, Routes
from sophia_tasks.ingest.events import DELETE
from sophia_tasks.schemas.fields import json_type_name

MAX_BATCH_ITEMS = 1000
MAX_DEPTH = 64
MAX_ID_LENGTH = 200

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_BOM = b"\xef\xbb\xbf"

_JSON_TYPES = frozenset({"application/json", "text/json"})
_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
    }
)
_SNIFFED_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "text/plain", "application/octet-stream"}
)
_UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


class EnvelopeError(ValueError):
    """A body we cannot accept; ``message`` (also ``str(exc)``) is the client-facing error,
    ``detail`` says what and where (e.g. ``"item 3: data is missing"``)."""

    status = 400

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        """The JSON error body of the contract: ``{"error": ..., "detail"?: ...}``."""
        body = {"error": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class UnsupportedMediaType(EnvelopeError):
    """The content type is clearly not JSON (HTTP 415)."""

    status = 415


@dataclass(frozen=True)
class Event:
    """One delivery extracted from a body."""

    event_id: str
    document: dict = field(hash=False)
    is_test: bool
    occurred_at: str | None
    kind: str
    #: position in a batch (array item or NDJSON item, 0-based); None for a single-object body,
    #: so the web can answer ``event_id`` vs ``event_ids`` even for a batch of one.
    index: int | None = None
    #: the collection the route (or the endpoint) names; None where the caller decides it
    collection: str | None = None
    #: "d" for a delete, None for an upsert
    op: str | None = None


def parse_json_bytes(raw: bytes) -> Any:
    """Parse one JSON document with orjson; any failure becomes ``EnvelopeError``.

    A leading UTF-8 BOM is tolerated (some Windows tools add it); orjson's own nesting limit
    (1024) surfaces as bad JSON.
    """
    data = _as_bytes(raw)
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return orjson.loads(data)
    except (orjson.JSONDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise EnvelopeError("body is not valid JSON", detail=_short(str(exc))) from None


def parse_body(raw: bytes, content_type: str | None, webhook_id: str | None = None,
               routes: Routes | None = None) -> list[Event]:
    """Parse a webhook body into one event (single object) or several (array / NDJSON), each routed
    by ``routes`` (the flow spec's); a type with no route refuses the whole body."""
    table = routes if routes is not None else Routes()

    def read(obj: Any, where: str | None, index: int | None) -> Event:
        return _event(obj, where, index, table)

    return _parse(raw, content_type, webhook_id, read, body_hash_for_single=True)


def parse_documents(raw: bytes, content_type: str | None, collection: str,
                    webhook_id: str | None = None) -> list[Event]:
    """Parse a collection endpoint's body: one document, a JSON array of documents, or NDJSON."""

    def read(obj: Any, where: str | None, index: int | None) -> Event:
        document = _check_document(obj, "the document", where)
        return Event("", document, False, None, "document", index, collection, _meta_op(document))

    return _parse(raw, content_type, webhook_id, read, body_hash_for_single=False)


#: Reads one item of a body (the object, where it is, its batch index) into an event without its id.
Reader = Callable[[Any, "str | None", "int | None"], Event]


def _parse(raw: bytes, content_type: str | None, webhook_id: str | None,
           read: Reader, body_hash_for_single: bool) -> list[Event]:
    body = _as_bytes(raw)
    mode = _body_mode(content_type)
    header_id = _check_webhook_id(webhook_id)
    stripped = body[len(_BOM):] if body.startswith(_BOM) else body
    if not stripped.strip():
        raise EnvelopeError("body is empty", detail="send a JSON object, a JSON array or NDJSON")

    if mode == "ndjson":
        return _batch(_ndjson_items(stripped), header_id, read)
    try:
        doc = parse_json_bytes(stripped)
    except EnvelopeError:
        if mode == "sniff" and _looks_like_ndjson(stripped):
            return _batch(_ndjson_items(stripped), header_id, read)
        raise
    _check_depth(doc, stripped, where=None)

    if isinstance(doc, dict):
        event = read(doc, None, None)
        event_id = header_id or event.event_id or (
            hashlib.sha256(body).hexdigest() if body_hash_for_single else canonical_id(doc))
        return [replace(event, event_id=event_id)]
    if isinstance(doc, list):
        if not doc:
            raise EnvelopeError("empty batch", detail="the array has no items")
        if len(doc) > MAX_BATCH_ITEMS:
            raise EnvelopeError(
                "batch too large", detail=f"{len(doc)} items; at most {MAX_BATCH_ITEMS} per request"
            )
        return _batch([(f"item {i}", item) for i, item in enumerate(doc)], header_id, read)
    raise EnvelopeError(
        "body must be a JSON object or array", detail=f"got a JSON {json_type_name(doc)}"
    )


def canonical_id(item: Any) -> str:
    """SHA-256 of the item's canonical JSON (sorted keys): the same item always gets the same id."""
    return hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()


# --------------------------------------------------------------------------- helpers


def _as_bytes(raw: Any) -> bytes:
    """Accept bytes-likes (and str, defensively) so odd callers never see a TypeError."""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, (bytearray, memoryview)):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    raise EnvelopeError("body is not valid JSON", detail=f"expected bytes, got {type(raw).__name__}")


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _body_mode(content_type: str | None) -> str:
    """``"json"``, ``"ndjson"`` or ``"sniff"`` for a Content-Type header; 415 for the rest."""
    if content_type is None or not content_type.strip():
        return "sniff"
    if len(content_type) <= 100:  # senders repeat a handful of values: parse each once
        return _known_body_mode(content_type)
    return _parse_body_mode(content_type)


@functools.lru_cache(maxsize=64)
def _known_body_mode(content_type: str) -> str:
    return _parse_body_mode(content_type)  # a 415 is raised, never cached


def _parse_body_mode(content_type: str) -> str:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media in _SNIFFED_TYPES:
        return "sniff"
    if media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        mode = "json"
    elif media in _NDJSON_TYPES:
        mode = "ndjson"
    else:
        raise UnsupportedMediaType(
            "unsupported content type",
            detail=f"{_short(media, 100)!r} is not JSON; send application/json or application/x-ndjson",
        )
    if charset and charset not in _UTF8_CHARSETS:
        raise UnsupportedMediaType(
            "unsupported content type", detail=f"charset {_short(charset, 40)!r}; JSON must be UTF-8"
        )
    return mode


def _check_id(value: Any, what: str, where: str | None) -> str:
    """An event id: non-empty string, at most 200 characters, no control characters."""
    if not isinstance(value, str):
        raise EnvelopeError("invalid event id", _at(where, f"{what} must be a string, got {json_type_name(value)}"))
    if not value.strip():
        raise EnvelopeError("invalid event id", _at(where, f"{what} must not be empty"))
    if len(value) > MAX_ID_LENGTH:
        raise EnvelopeError(
            "invalid event id", _at(where, f"{what} is {len(value)} characters; at most {MAX_ID_LENGTH}")
        )
    if _CONTROL_RE.search(value):
        raise EnvelopeError("invalid event id", _at(where, f"{what} contains control characters"))
    return value


def _check_webhook_id(webhook_id: str | None) -> str | None:
    if webhook_id is None:
        return None
    if isinstance(webhook_id, str) and not webhook_id.strip():
        return None
    value = webhook_id.strip() if isinstance(webhook_id, str) else webhook_id
    return _check_id(value, "webhook-id header", None)


def _at(where: str | None, text: str) -> str:
    return text if where is None else f"{where}: {text}"


def _check_depth(doc: Any, raw: bytes, where: str | None) -> None:
    """Refuse documents nested deeper than MAX_DEPTH (the top level is depth 1).

    Cheap path first: a body with at most MAX_DEPTH brackets cannot be that deep. Otherwise
    only containers are visited (the document comes from orjson: plain dicts and lists), and
    the recursion stops one level past the limit, so it is bounded.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    if _deeper_than_limit(doc, 1):
        raise EnvelopeError(
            "body is nested too deeply", _at(where, f"more than {MAX_DEPTH} levels of arrays/objects")
        )


def _deeper_than_limit(value: Any, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return True
    for child in (value.values() if type(value) is dict else value):
        t = type(child)
        if (t is dict or t is list) and _deeper_than_limit(child, depth + 1):
            return True
    return False


def _looks_like_ndjson(raw: bytes) -> bool:
    lines = [line.strip() for line in raw.split(b"\n")]
    lines = [line for line in lines if line]
    return len(lines) >= 2 and all(line.startswith(b"{") for line in lines)


def _ndjson_items(raw: bytes) -> list[tuple[str, Any]]:
    """(label, parsed object) for each non-empty line; errors name the 1-based line."""
    numbered = [(n, line.strip()) for n, line in enumerate(raw.split(b"\n"), start=1)]
    numbered = [(n, line) for n, line in numbered if line]
    if not numbered:
        raise EnvelopeError("empty batch", detail="the NDJSON body has no lines")
    if len(numbered) > MAX_BATCH_ITEMS:
        raise EnvelopeError(
            "batch too large", detail=f"{len(numbered)} lines; at most {MAX_BATCH_ITEMS} per request"
        )
    items: list[tuple[str, Any]] = []
    for n, line in numbered:
        where = f"line {n}"
        try:
            value = parse_json_bytes(line)
        except EnvelopeError as exc:
            raise EnvelopeError(exc.message, _at(where, exc.detail or "")) from None
        if not isinstance(value, dict):
            raise EnvelopeError(
                "invalid envelope", _at(where, f"each NDJSON line must be a JSON object, got {json_type_name(value)}")
            )
        _check_depth(value, line, where)
        items.append((where, value))
    return items


def _batch(items: list[tuple[str, Any]], header_id: str | None, read: Reader) -> list[Event]:
    events = []
    for index, (where, item) in enumerate(items):
        event = read(item, where, index)
        if header_id is not None:
            event_id = f"{header_id}:{index}"
        elif event.event_id:
            event_id = event.event_id
        else:
            event_id = canonical_id(item)
        events.append(replace(event, event_id=event_id))
    return events


def _event(obj: Any, where: str | None, index: int | None, routes: Routes) -> Event:
    """Recognize form 1 or 2 and route it; ``event_id`` is the envelope id or "" (filled in by the caller)."""
    if not isinstance(obj, dict):
        raise EnvelopeError("invalid envelope", _at(where, f"must be a JSON object, got {json_type_name(obj)}"))
    has_data = "data" in obj
    wrapped = [name for name in routes.wrappers if name in obj]
    if wrapped and (has_data or len(wrapped) > 1):
        fields = ", ".join(["data", *wrapped] if has_data else wrapped)
        raise EnvelopeError("invalid envelope", _at(where, f"has {fields}; send one of them"))

    if wrapped:
        name = wrapped[0]
        is_test = obj.get("isTest", False)
        if not isinstance(is_test, bool):
            raise EnvelopeError(
                "invalid envelope", _at(where, f"isTest must be true or false, got {json_type_name(is_test)}")
            )
        document = _check_document(obj[name], name, where)
        route = _route(routes, routes.wrappers[name], where)
        return Event("", document, is_test, _occurred_at(obj, where), "wrapped", index, route.collection,
                     route.op or _meta_op(document))

    if has_data or "type" in obj:
        kind = obj.get("type")
        if kind is None:
            raise EnvelopeError("invalid envelope", _at(where, f"type is missing; {_known_types(routes)}"))
        if not isinstance(kind, str):
            raise EnvelopeError(
                "invalid envelope", _at(where, f"type must be a string, got {json_type_name(kind)}")
            )
        route = _route(routes, kind, where)
        envelope_id = ""
        if "id" in obj:
            envelope_id = _check_id(obj["id"], "id", where)
        if not has_data:
            raise EnvelopeError("invalid envelope", _at(where, "data is missing"))
        document = _check_document(obj["data"], "data", where)
        return Event(envelope_id, document, False, _occurred_at(obj, where), "envelope", index, route.collection,
                     route.op or _meta_op(document))

    forms = ['{"type": "<type>", "data": {...}}'] + [f'{{"{name}": {{...}}}}' for name in routes.wrappers]
    raise EnvelopeError("invalid envelope", _at(where, f"expected {' or '.join(forms)}"))


def _known_types(routes: Routes) -> str:
    known = routes.known()
    return f"known types: {', '.join(known)}" if known else "the flow spec routes no type (see its routes section)"


def _route(routes: Routes, kind: str, where: str | None) -> Route:
    route = routes.resolve(kind)
    if route is None:
        raise EnvelopeError("unknown type",
                            _at(where, f"no route for type {_short(kind, 60)!r}; {_known_types(routes)}"))
    return route


def _check_document(document: Any, path: str, where: str | None) -> dict:
    if not isinstance(document, dict):
        raise EnvelopeError(
            "invalid document", _at(where, f"{path} must be a JSON object, got {json_type_name(document)}")
        )
    return document


def _meta_op(document: dict) -> str | None:
    """"d" when the document says it is a deletion (``_meta.op``, as in Estuary)."""
    meta = document.get("_meta")
    return DELETE if type(meta) is dict and meta.get("op") == DELETE else None


_TIME_KEYS = ("occurred_at", "timestamp", "published_at")
# Unix seconds accepted: 1970-01-01 .. 9999-12-31 (anything else is surely a unit mistake).
_MAX_UNIX = 253402300799


def _occurred_at(obj: dict, where: str | None) -> str | None:
    """First of occurred_at/timestamp/published_at present (non-null), as ISO-8601 UTC."""
    for key in _TIME_KEYS:
        value = obj.get(key)
        if value is not None:
            return _iso_utc(key, value, where)
    return None


def _iso_utc(key: str, value: Any, where: str | None) -> str:
    """An ISO-8601 string (naive = UTC) or unix seconds, normalized to ISO-8601 in UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value <= _MAX_UNIX:
            raise EnvelopeError(
                "invalid envelope", _at(where, f"{key} must be unix seconds between 0 and {_MAX_UNIX}")
            )
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc).isoformat()
    if not isinstance(value, str):
        raise EnvelopeError(
            "invalid envelope",
            _at(where, f"{key} must be an ISO-8601 datetime or unix seconds, got {json_type_name(value)}"),
        )
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed.astimezone(dt.timezone.utc).isoformat()
    except (ValueError, OverflowError):
        raise EnvelopeError(
            "invalid envelope", _at(where, f"{key} must be an ISO-8601 datetime or unix seconds")
        ) from None
