"""The event message the webhook and backfill put on the broker, one per accepted event."""
from __future__ import annotations

from typing import Any

from sophia_tasks.core.documents import is_version, normalize_version, parse_time

#: ``op`` of a deletion: a route declared ``op: delete``, or a captured document whose ``_meta.op`` is "d".
DELETE = "d"


def make_event(collection: str, document: Any, event_id: str, received_at: str, published_at: str | None,
               source: str, is_test: bool = False, op: str | None = None) -> dict[str, Any]:
    """The message the webhook and backfill put on the broker, one per event.

    ``op="d"`` marks a deletion (``"op": "d"`` in the message); an upsert has no ``op`` key at all,
    so its message is the same bytes as before deletes existed.
    """
    event = {
        "event_id": event_id,
        "collection": collection,
        "received_at": received_at,
        "published_at": published_at if is_version(published_at) else normalize_version(published_at,
                                                                                       parse_time(received_at)),
        "source": source,
        "is_test": bool(is_test),
        "document": document,
    }
    if op is not None:
        if op != DELETE:
            raise ValueError(f"op must be {DELETE!r} (a delete) or None (an upsert), got {op!r}")
        event["op"] = DELETE
    return event
