"""Reconciliation with Gong: find the calls a webhook never brought (or brought an older version of)
and put them through the chain, as a backfill would.

Why: a webhook delivery can be lost on Gong's side (a rule paused, retries exhausted, a
misconfigured URL) and nothing here would ever know. The beat job ``sophia.reconcile`` (every
``SOPHIA_RECONCILE_EVERY``, only with the Gong API credentials set) lists the calls Gong has
since its checkpoint through the backfill's client (``gong_api``), compares each with the
version we hold, and enqueues on the bulk lane the ones that are:

* ``missing``: no target holds the call;
* ``newer``: Gong's version is newer than ours.

"Gong's version" is the version a backfill gives the call (``backfill.item_version``: the
call's ``metaData.started`` for a call from the API), so the event enqueued carries exactly
the version that was compared and last-write-wins keeps it: a second run finds nothing. "Ours"
is the newest ``_meta.published_at`` among the PostgreSQL staging rows and the Redis hot cache
of the collection's bindings (one query and one pipelined read per page); a call older than
both stores keep (Redis' TTL, PostgreSQL's 30 days) counts as missing and is enqueued again,
harmlessly (idempotent upserts).

Counted in ``sophia_reconciled_total{outcome="missing"|"newer", mode="enqueued"|"dry_run"}``;
``alerts.reconcile`` in the flow spec says how many repairs in what window page someone.

Checkpoint (PostgreSQL, ``sophia_backfill_checkpoints``, key ``reconcile:<Gong URL>``): the range of
the run under way and the cursor of its next page, saved after every page, so a killed run
resumes; a finished run records its end, and the next run starts ``OVERLAP`` before it (Gong
lists calls by start time, and a call appears there only once Gong has processed it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping

import orjson
import redis as redis_lib
from psycopg2 import sql

from sophia_tasks.core.documents import format_version, parse_time, utcnow
from sophia_tasks.core.flowspec import Binding, FlowSpec
from sophia_tasks.flows import load_spec
from sophia_tasks.observe.stats import Stats
from sophia_tasks.ops.backfill import (
    BackfillError,
    BadItem,
    Checkpoint,
    CheckpointStore,
    Publish,
    gong_client,
    item_to_event,
    paced_publish,
    parse_date,
    target_for,
)
from sophia_tasks.ops.gong_api import GongAPIError, GongClient
from sophia_tasks.settings import Settings
from sophia_tasks.store.db import connections

log = logging.getLogger(__name__)

#: Each scheduled run lists from this long before the previous run's end (calls Gong had not processed yet).
OVERLAP = timedelta(hours=2)
#: The first scheduled run looks back this far.
FIRST_LOOKBACK = timedelta(hours=24)
OUTCOMES = ("missing", "newer")


@dataclass
class Found:
    key: str
    outcome: str                 # missing | newer
    gong_version: str
    our_version: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"call_id": self.key, "outcome": self.outcome, "gong_version": self.gong_version,
                "our_version": self.our_version}


@dataclass
class ReconcileReport:
    since: str
    until: str
    dry_run: bool
    listed: int = 0
    found: list[Found] = field(default_factory=list)
    enqueued: int = 0
    skipped_bad: int = 0
    pages: int = 0
    resumed: bool = False
    status: str = "done"
    error: str | None = None

    def counts(self) -> dict[str, int]:
        return {o: sum(1 for f in self.found if f.outcome == o) for o in OUTCOMES}

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "dry_run": self.dry_run, "status": self.status,
                "listed": self.listed, "found": self.counts(), "enqueued": self.enqueued,
                "skipped_bad": self.skipped_bad, "pages": self.pages, "resumed": self.resumed, "error": self.error,
                "calls": [f.as_dict() for f in self.found]}


# -- "ours" ---------------------------------------------------------------------------------------
def _bindings(spec: FlowSpec) -> list[tuple[str, Binding]]:
    """(endpoint, binding) of every Redis and PostgreSQL binding fed by the Gong calls (the collection
    the spec routes ``call_completed`` to)."""
    calls = target_for(spec).collection
    sources = {calls} | {name for name, d in spec.derivations.items() if d.source == calls}
    return [(m.endpoint, b) for m in spec.materializations.values() for b in m.bindings
            if b.source in sources and m.endpoint in ("postgres", "redis")]


def held_versions(settings: Settings, spec: FlowSpec, keys: Iterable[str],
                  client: redis_lib.Redis | None = None) -> dict[str, str]:
    """Key -> the newest version any PostgreSQL staging row or Redis cache entry holds."""
    keys = list(dict.fromkeys(keys))
    out: dict[str, str] = {}
    if not keys:
        return out

    def keep(key: str, version: str | None) -> None:
        if version and version > out.get(key, ""):
            out[key] = version

    for endpoint, binding in _bindings(spec):
        if endpoint == "postgres":
            with connections.transaction(settings.postgres_dsn) as cur:
                cur.execute("SELECT to_regclass(%s)", (f'"{binding.table}"',))
                if cur.fetchone()[0] is None:
                    continue  # never written yet: every call is missing there
                cur.execute(sql.SQL("SELECT {}, flow_published_at FROM {} WHERE {} = ANY(%s)").format(
                    sql.Identifier(binding.key_column), sql.Identifier(str(binding.table)),
                    sql.Identifier(binding.key_column)), (keys,))
                for key, published in cur.fetchall():
                    keep(str(key), format_version(published))
        else:
            own = client or redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
            try:
                values = own.mget([f"{binding.key_prefix}{k}" for k in keys])
            finally:
                if client is None:
                    own.close()
            for key, raw in zip(keys, values, strict=True):
                if raw:
                    try:
                        keep(key, str((orjson.loads(raw).get("_meta") or {}).get("published_at") or ""))
                    except (orjson.JSONDecodeError, AttributeError):
                        continue
    return out


def compare(events: list[dict[str, Any]], held: Mapping[str, str]) -> list[tuple[Found, dict[str, Any]]]:
    """The events whose call is missing here, or newer at Gong, with what was found (pure)."""
    out = []
    for event in events:
        key = str(event["document"]["metaData"]["id"])
        gong = str(event["published_at"])
        ours = held.get(key)
        if ours is None:
            out.append((Found(key, "missing", gong, None), event))
        elif gong > ours:  # fixed-width UTC versions: string order is time order
            out.append((Found(key, "newer", gong, ours), event))
    return out


# -- the run --------------------------------------------------------------------------------------
def checkpoint_key(client: GongClient) -> str:
    return f"reconcile:{client.base_url}"


def _scheduled_range(cp: Checkpoint | None, now: datetime) -> tuple[datetime, datetime]:
    last_end = parse_time((cp.params or {}).get("last_until")) if cp is not None else None
    since = (last_end - OVERLAP) if last_end is not None else now - FIRST_LOOKBACK
    return since, now


def run_reconcile(settings: Settings, since: str | datetime | None = None, until: str | datetime | None = None, *,
                  dry_run: bool = False, client: GongClient | None = None, publish: Publish | None = None,
                  spec: FlowSpec | None = None, store: CheckpointStore | None = None,
                  now: datetime | None = None,
                  progress: Callable[[ReconcileReport], None] | None = None) -> ReconcileReport:
    """Reconcile the calls Gong has in a range with ours; enqueue what is missing or newer there.

    ``since`` given (the command line): that range, no checkpoint. ``since`` None (beat): from the
    checkpoint, resuming an interrupted run at its cursor.
    """
    spec = spec or load_spec(settings.flow_path)
    client = client or gong_client(settings)
    now = now or utcnow()
    manual = since is not None
    own_store = store is None and not manual
    store = store if store is not None else (CheckpointStore(settings.postgres_dsn) if own_store else None)
    try:
        cp: Checkpoint | None = None
        cursor: str | None = None
        page_no = 0
        if manual:
            start = parse_date(since, "--since")
            end = parse_date(until, "--until") or now
            assert start is not None
        else:
            assert store is not None
            key = checkpoint_key(client)
            if not store.try_lock(key):
                raise BackfillError("another reconciliation is running")
            cp = store.load(key)
            if cp is not None and cp.status == "running" and cp.params.get("since"):
                start, end = parse_time(cp.params["since"]), parse_time(cp.params["until"])  # resume
                cursor, page_no = cp.cursor, cp.page
                assert start is not None and end is not None
            else:
                start, end = _scheduled_range(cp, now)
                last = (cp.params or {}).get("last_until") if cp is not None else None
                cp = Checkpoint(key=key, kind="reconcile", source=f"{client.base_url} reconcile",
                                params={"since": format_version(start), "until": format_version(end),
                                        "last_until": last})
                store.save(cp)
        if end <= start:
            raise BackfillError(f"--until {format_version(end)} is not after --since {format_version(start)}")
        report = ReconcileReport(since=format_version(start), until=format_version(end), dry_run=dry_run,
                                 resumed=page_no > 0)
        out = publish if (publish is not None or dry_run) else paced_publish(settings)
        stats = Stats(settings.redis_url)
        try:
            for page in client.pages(start, end, cursor, first_number=page_no + 1):
                _page(settings, spec, page.calls, report, dry_run, out, stats)
                report.pages += 1
                if cp is not None and store is not None:
                    cp.cursor, cp.page = page.next_cursor, page.number
                    cp.published += sum(1 for _ in page.calls)
                    store.save(cp)
                if progress:
                    progress(report)
        except GongAPIError as exc:
            again = "the next run resumes from this page" if cp is not None else "rerun the command"
            report.status, report.error = "failed", f"{exc}; {again}"
            if cp is not None and store is not None:
                cp.status, cp.error = "running", str(exc)
                store.save(cp)
            log.error("reconcile: %s", report.error)
            return report
        finally:
            stats.client.close()
        if cp is not None and store is not None:
            cp.status, cp.error, cp.cursor, cp.page = "done", None, None, 0
            cp.params = {"since": None, "until": None, "last_until": format_version(end)}
            store.save(cp)
        counts = report.counts()
        log.info("reconcile %s .. %s: %d listed, %d missing, %d newer, %d enqueued%s", report.since, report.until,
                 report.listed, counts["missing"], counts["newer"], report.enqueued, " (dry run)" if dry_run else "",
                 extra={"stage": "reconcile", "events": report.enqueued})
        return report
    finally:
        if own_store and store is not None:
            store.close()


def _page(settings: Settings, spec: FlowSpec, calls: list[Any], report: ReconcileReport, dry_run: bool,
          publish: Publish | None, stats: Stats) -> None:
    received = format_version(utcnow())
    target = target_for(spec)
    collection = spec.collections[target.collection]
    events = []
    for call in calls:
        try:
            events.append(item_to_event(call, received, target))
        except BadItem as exc:
            report.skipped_bad += 1
            log.warning("reconcile: a call Gong listed is not a call delivery: %s", exc)
    report.listed += len(events)
    found = compare(events, held_versions(settings, spec, [str(collection.key_of(e["document"])) for e in events]))
    if not found:
        return
    if not dry_run and publish is not None:
        publish([event for _f, event in found])
        report.enqueued += len(found)
    report.found.extend(f for f, _e in found)
    mode = "dry_run" if dry_run else "enqueued"
    stats.incr([("reconciled", {"outcome": o, "mode": mode}, sum(1 for f, _e in found if f.outcome == o))
                for o in OUTCOMES])
