"""The shape of what travels between stages, and the helpers every stage shares.

A document is the collection's JSON object with a leading ``_meta`` object:
``{"_meta": {"published_at", "event_id", "collection", "received_at", "source", "op"?}, ...}``.
``op`` is ``"d"`` for a delete (Estuary's convention): the document carries its key, and the
targets delete that key (or keep the document as a marked row, with ``soft_delete``).
``published_at`` is the version used for last-write-wins: ISO-8601 UTC with
microseconds and a ``Z``, so comparing two versions as strings orders them in time
(the Redis Lua script and the SQL targets rely on that).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import orjson

_VERSION_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


_UNIX_SECONDS = re.compile(r"\d{9,11}(\.\d+)?").fullmatch
#: ``format_version``'s own text (years 1000-9999, which it pads like strftime).
_CANONICAL = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z").fullmatch


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_version(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    m = moment.astimezone(timezone.utc)
    if m.year < 1000:  # strftime's %Y does not pad these; keep its exact text
        return m.strftime(_VERSION_FMT)
    # The same text as strftime(_VERSION_FMT) at a tenth of the cost (twice per webhook request).
    return (f"{m.year}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}."
            f"{m.microsecond:06d}Z")


def parse_time(value: Any) -> datetime | None:
    """Parse ISO-8601 (any offset, ``Z``) or unix seconds; None when it is neither."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(float(value), timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _UNIX_SECONDS(text):
            return parse_time(float(text))
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment
    return None


def is_version(value: Any) -> bool:
    """``value`` is already a version, ``format_version``'s text of a real moment (the common case:
    every stage passes one on, and parsing and formatting it again gives the same text)."""
    if type(value) is not str or not _CANONICAL(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])  # a real date and time, not just the shape of one
    except ValueError:
        return False
    return True


def normalize_version(value: Any, default: datetime | None = None) -> str:
    if is_version(value):
        return value
    moment = parse_time(value) or default or utcnow()
    return format_version(moment)


def make_document(body: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """``_meta`` first, ``published_at`` first inside it: the Redis script reads it by position."""
    doc: dict[str, Any] = {"_meta": dict(meta)}
    for k, v in body.items():
        if k != "_meta":
            doc[k] = v
    return doc


def meta(document: Mapping[str, Any]) -> Mapping[str, Any]:
    value = document.get("_meta")
    return value if type(value) is dict or isinstance(value, Mapping) else {}


DELETE_OP = "d"


def is_delete(document: Mapping[str, Any]) -> bool:
    """The document deletes its key (``_meta.op == "d"``)."""
    return meta(document).get("op") == DELETE_OP


def version_of(document: Mapping[str, Any]) -> str:
    return str(meta(document).get("published_at") or "")


def dumps(document: Any) -> bytes:
    return orjson.dumps(document)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


def latest_per_key(keyed: Iterable[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Collapse a batch to one document per key, the newest version winning (later on ties, but
    a delete is never replaced by an upsert of its own version: the targets break ties that way too).

    Upserts and MERGE refuse to touch one row twice in a statement, and a duplicate
    inside a batch is the common case when a sender retries quickly.
    """
    best: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, doc in keyed:
        version = version_of(doc)
        current = best.get(key)
        if current is None or version > current[0] or (
                version == current[0] and (is_delete(doc) or not is_delete(current[1]))):
            best[key] = (version, doc)
    return [(key, pair[1]) for key, pair in best.items()]


# -- encode once ------------------------------------------------------------------------
#: id(document) -> (document, its orjson text), inside ``encoding_cache()`` only.
_encodings: ContextVar[dict[int, tuple[Any, bytes]] | None] = ContextVar("sophia_encodings", default=None)


@contextmanager
def encoding_cache() -> Iterator[None]:
    """Within this block each document is encoded once, whichever target asks first.

    Why: the validate task wrote the same derived documents as JSON three times (the Redis
    value, the PostgreSQL jsonb, the Snowflake buffer), and the Snowflake task decoded them
    only to encode them again. The documents must not change inside the block: the fan-out
    opens it after the derivation, when they are final. The cache holds each document, so
    an id is never reused while the block lasts.
    """
    token = _encodings.set({})
    try:
        yield
    finally:
        _encodings.reset(token)


def remember_encoding(document: Any, raw: bytes) -> None:
    """``raw`` is the JSON text ``document`` was decoded from (a buffer's item)."""
    cache = _encodings.get()
    if cache is not None:
        cache[id(document)] = (document, raw)


def encoded(document: Any) -> bytes:
    """``orjson.dumps(document)``, once per document inside ``encoding_cache()``."""
    cache = _encodings.get()
    if cache is None:
        return orjson.dumps(document)
    hit = cache.get(id(document))
    if hit is not None and hit[0] is document:
        return hit[1]
    raw = orjson.dumps(document)
    cache[id(document)] = (document, raw)
    return raw
