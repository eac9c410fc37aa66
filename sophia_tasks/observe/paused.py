"""Paused bindings: a table that does not match the flow spec holds its documents until
`sophia-tasks flows apply` (``sophia_tasks.materializers.schema.BindingPaused``).

The workers report each paused batch here (a hash in the shared-counters Redis); `status`,
`/metrics` and the alerts read it. An entry counts while it is fresh: a paused batch looks at
its table again at least every minute, so a binding nobody reported for ``FRESH_SECONDS`` has
resumed (a worker that writes it again also removes the entry).
"""
from __future__ import annotations

import json
import time
from typing import Any

import redis as redis_lib

KEY = "sophia:paused"
#: An entry older than this is a pause that ended (paused batches report at least once a minute).
FRESH_SECONDS = 180.0


def _field(target: str, collection: str) -> str:
    return f"{target}|{collection}"


def mark(client: redis_lib.Redis, target: str, collection: str, reason: str, documents: int,
         now: float | None = None) -> float:
    """Record a paused batch of ``target``'s binding of ``collection``; answers since when it is paused."""
    now = time.time() if now is None else now
    raw = client.hget(KEY, _field(target, collection))
    since = now
    if raw:
        try:
            old = json.loads(raw)
            if now - float(old.get("seen", 0)) <= FRESH_SECONDS:
                since = float(old.get("since", now))
        except (ValueError, TypeError):
            pass
    client.hset(KEY, _field(target, collection), json.dumps({
        "target": target, "collection": collection, "since": since, "seen": now, "reason": reason[:1000],
        "documents": int(documents)}))
    return since


def clear(client: redis_lib.Redis, target: str, collection: str) -> None:
    client.hdel(KEY, _field(target, collection))


def paused_bindings(client: redis_lib.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """The bindings paused now: target, collection, since, seen, reason (the table's drift) and the
    documents of the last paused batch."""
    now = time.time() if now is None else now
    out = []
    for raw in client.hvals(KEY):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if now - float(entry.get("seen", 0)) <= FRESH_SECONDS:
            out.append(entry)
    return sorted(out, key=lambda e: (e.get("target", ""), e.get("collection", "")))
