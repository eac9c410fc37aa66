"""Live worker nodes from their heartbeats, and the readiness verdict built on them.

Why heartbeats in Redis rather than Celery's inspect: an inspect is a broadcast with a
reply timeout (a second or more with no worker), paid by every ``/readyz`` probe; a
heartbeat is one ``HGETALL``. Each worker node's main process writes one field of
``sophia:workers:<queue prefix>`` every ``HEARTBEAT_SECONDS`` while its consumer is
connected (``sophia_tasks.worker.heartbeat``): when it was seen and when it last
*consumed*. A node consumes when a task of its pool finished since the last beat, or when
its pool has a free process (it takes whatever arrives at once). A node whose pool is
stuck, or that is gone, stops consuming.

Readiness fails when events wait (messages on a queue of this deployment, or the ingest
buffer, ready or held by a worker) and no node consumed within
``SOPHIA_READY_WORKER_SECONDS``. With nothing waiting an idle deployment with no worker is
still ready: no event is late.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib

from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.settings import Settings

HEARTBEAT_SECONDS = 2.0
#: A node not seen for this long is left out of the list (and dropped by the next beat of any node).
FORGET_SECONDS = 3600.0


def workers_key(settings: Settings) -> str:
    """One hash per queue prefix: a test or benchmark stack's workers never make the demo ready."""
    return f"sophia:workers:{settings.queue_prefix}"


def record_heartbeat(client: redis_lib.Redis, settings: Settings, node: str, consumed_at: float | None,
                     active: int, concurrency: int, now: float | None = None) -> None:
    now = time.time() if now is None else now
    value = {"seen": now, "consumed": consumed_at, "active": active, "concurrency": concurrency}
    client.hset(workers_key(settings), node, json.dumps(value))


def forget_node(client: redis_lib.Redis, settings: Settings, node: str) -> None:
    """A node shutting down cleanly takes itself off the list."""
    client.hdel(workers_key(settings), node)


def read_workers(client: redis_lib.Redis, settings: Settings, now: float | None = None,
                 seen_within: float = 3 * HEARTBEAT_SECONDS) -> list[dict[str, Any]]:
    """The nodes that sent a heartbeat within ``seen_within`` seconds, newest consumer first."""
    now = time.time() if now is None else now
    out = []
    for raw_node, raw in client.hgetall(workers_key(settings)).items():
        try:
            beat = json.loads(raw)
            seen = float(beat["seen"])
        except (ValueError, KeyError, TypeError):
            continue
        if now - seen > seen_within:
            continue
        consumed = beat.get("consumed")
        out.append({"node": raw_node.decode() if isinstance(raw_node, bytes) else str(raw_node),
                    "seen_age_s": round(max(0.0, now - seen), 1),
                    "consumed_age_s": None if consumed is None else round(max(0.0, now - float(consumed)), 1),
                    "active": int(beat.get("active") or 0), "concurrency": int(beat.get("concurrency") or 0)})
    return sorted(out, key=lambda w: (w["consumed_age_s"] is None, w["consumed_age_s"] or 0.0, w["node"]))


def forget_stale(client: redis_lib.Redis, settings: Settings, now: float) -> None:
    """Drop nodes gone for over ``FORGET_SECONDS`` (a worker killed never says goodbye)."""
    key = workers_key(settings)
    gone = []
    for node, raw in client.hgetall(key).items():
        try:
            if now - float(json.loads(raw)["seen"]) > FORGET_SECONDS:
                gone.append(node)
        except (ValueError, KeyError, TypeError):
            gone.append(node)
    if gone:
        client.hdel(key, *gone)


@dataclass
class WorkerReadiness:
    ok: bool
    workers: list[dict[str, Any]] = field(default_factory=list)
    waiting: float | None = None          # messages and buffered events waiting, None: broker unreadable
    reason: str | None = None
    checked_at: float = 0.0


def waiting_events(settings: Settings, spec: FlowSpec) -> float:
    """Messages on this deployment's queues plus events in its buffers, ready or held by a worker."""
    from sophia_tasks.observe.queues import broker_snapshot

    snap = broker_snapshot(settings, spec)
    return float(sum(q.ready + (q.reserved or 0.0) for q in snap.queues.values()))


def worker_readiness(settings: Settings, spec: FlowSpec, client: redis_lib.Redis,
                     now: float | None = None) -> WorkerReadiness:
    """Whether some worker consumes while events wait (see the module doc)."""
    now = time.time() if now is None else now
    limit = settings.ready_worker_seconds
    workers = read_workers(client, settings, now, seen_within=max(limit, 3 * HEARTBEAT_SECONDS))
    consuming = [w for w in workers if w["consumed_age_s"] is not None and w["consumed_age_s"] <= limit]
    if consuming:
        return WorkerReadiness(True, workers, None, None, now)
    waiting = waiting_events(settings, spec)
    if waiting <= 0:
        return WorkerReadiness(True, workers, waiting, None, now)
    if not workers:
        reason = (f"{waiting:g} message(s)/event(s) wait and no worker node sent a heartbeat in the last "
                  f"{limit:g}s: start workers (`celery -A sophia_tasks worker`)")
    else:
        reason = (f"{waiting:g} message(s)/event(s) wait and none of the {len(workers)} live worker node(s) "
                  f"consumed in the last {limit:g}s (every pool process busy or stuck): see `sophia-tasks status`")
    return WorkerReadiness(False, workers, waiting, reason, now)


_cache: dict[tuple[str, str], WorkerReadiness] = {}
_cache_lock = threading.Lock()


def cached_worker_readiness(settings: Settings, spec: FlowSpec, client: redis_lib.Redis,
                            ttl: float = HEARTBEAT_SECONDS) -> WorkerReadiness:
    """``worker_readiness`` at most once per ``ttl`` seconds per process: probes come often."""
    key = (settings.redis_url, settings.queue_prefix)
    now = time.time()
    hit = _cache.get(key)
    if hit is not None and now - hit.checked_at < ttl:
        return hit
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and now - hit.checked_at < ttl:
            return hit
        verdict = worker_readiness(settings, spec, client, now)
        _cache[key] = verdict
        return verdict
