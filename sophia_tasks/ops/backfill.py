"""Backfill: put historical calls through the chain on the bulk lane, resumably and idempotently.

Two sources, one loop (read items -> events -> ``send_validate(events, lane="bulk")`` through the
bulk window (``sophia_tasks.pipeline.bulk_window``) in
batches -> checkpoint):

* a file: NDJSON (one item a line) or a JSON array (``.json``); an item is a bare
  Gong call, the envelope ``{"type", "data"}`` or ``{"callData", "isTest"}``;
* Gong itself: ``POST /v2/calls/extensive`` page by page (``gong_api``).

Why it is shaped like this:

* **Resumable**: after every published batch a checkpoint row in PostgreSQL records
  how far we got (byte offset + line for NDJSON, item index for arrays, the next
  cursor for Gong). It is written *after* the publish, so a crash between the two
  re-publishes one batch, which is harmless: see the next point.
* **Idempotent**: an event's id is the envelope ``id`` when it has one, else the
  SHA-256 of the item's canonical JSON (sorted keys), the webhook's rule for batch
  items, so the same item always has the same id. The targets are last-write-wins
  upserts and the journal ignores a known event: re-publishing changes nothing. A
  finished checkpoint makes the second run publish nothing at all (``--restart``
  forces a new pass).
* **Versions**: ``published_at`` (the last-write-wins version) is the item's own time
  (``occurred_at``/``timestamp``/``published_at`` of the envelope, or ``_meta.published_at``
  of an exported document), else the call's ``metaData.started``, else the time of
  the backfill. A live update is versioned at its delivery, later than the call's
  start, so an old backfill fills gaps and never overwrites newer live data.
* **Live first**: everything goes to the bulk lane's queues, so live webhooks keep
  their latency while a backfill runs.
* **Where to**: envelopes go where the flow spec routes their type, as at the webhook; a bare
  call goes to the collection of ``--collection``, else to the route of ``call_completed`` (the
  type a Gong call stands for), so the collection is the spec's, never a constant here.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import orjson
import psycopg2
import psycopg2.extras

from sophia_tasks.core.documents import format_version, parse_time, utcnow
from sophia_tasks.core.flowspec import FlowSpec, Route, Routes
from sophia_tasks.flows import load_spec
from sophia_tasks.ingest.envelope import EnvelopeError, parse_body
from sophia_tasks.ingest.events import make_event
from sophia_tasks.messaging import routing
from sophia_tasks.messaging.config import sender_for
from sophia_tasks.ops.gong_api import GongAPIError, GongClient
from sophia_tasks.pipeline.bulk_window import window_for
from sophia_tasks.settings import Settings
from sophia_tasks.store.db import connect

log = logging.getLogger(__name__)

#: The envelope type a bare Gong call stands for: its route in the flow spec names the collection.
CALL_TYPE = "call_completed"
SOURCE = "backfill"
DEFAULT_BATCH = 500
MAX_BAD_EXAMPLES = 5

Publish = Callable[[list[dict[str, Any]]], None]
#: progress(done, total, published_by_this_run): done/total in the source's unit (bytes, items, calls).
Progress = Callable[[int, int, int], None]


class BackfillError(RuntimeError):
    """A backfill that cannot go on; the message is the one-line reason an operator sees."""


# -- items -> events -------------------------------------------------------------------------
class BadItem(ValueError):
    """One item that is not a call delivery; skipped (or, with --strict, fatal)."""


def canonical_id(item: Any) -> str:
    """SHA-256 of the item's canonical JSON: the same item always gets the same event id."""
    return hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _is_bare_call(item: Mapping[str, Any]) -> bool:
    return "metaData" in item and not ({"data", "callData", "type"} & set(item))


def item_version(item: Mapping[str, Any], call: Mapping[str, Any], occurred_at: str | None) -> str | None:
    """The item's own time, else ``_meta.published_at`` of an exported document, else ``metaData.started``."""
    if occurred_at:
        return occurred_at
    meta = call.get("_meta")
    if isinstance(meta, Mapping) and parse_time(meta.get("published_at")) is not None:
        return str(meta["published_at"])
    started = (call.get("metaData") or {}).get("started") if isinstance(call.get("metaData"), Mapping) else None
    if parse_time(started) is not None:
        return str(started)
    return None


@dataclass(frozen=True)
class Target:
    """Where a run's items go: the spec's routes (envelopes) and the collection of bare calls."""

    routes: Routes
    collection: str

    @property
    def bare_routes(self) -> Routes:
        """A bare call read as a ``call_completed`` envelope that goes to ``collection``."""
        return Routes(routes=(Route(CALL_TYPE, self.collection),))


def target_for(spec: FlowSpec, collection: str | None = None) -> Target:
    """The routes of ``spec`` and the collection bare calls go to: ``collection`` when given, else
    the route of ``call_completed``; BackfillError naming the choices when there is none."""
    known = ", ".join(spec.collections)
    if collection is not None:
        if collection not in spec.collections:
            raise BackfillError(f"--collection {collection!r} is not a collection of the flow spec; "
                                f"known collections: {known}")
        return Target(spec.routes, collection)
    route = spec.routes.resolve(CALL_TYPE)
    if route is None:
        raise BackfillError(f"the flow spec has no route for {CALL_TYPE!r}: give --collection "
                            f"(known collections: {known})")
    return Target(spec.routes, route.collection)


def item_to_event(item: Any, received_at: str, target: Target) -> dict[str, Any]:
    """One file or API item as the event the chain takes; BadItem says why it is not one.

    The envelope checks and routes are the webhook's (``envelope.parse_body``), so a backfill
    accepts exactly what the webhook accepts, plus bare calls (sent to ``target.collection``).
    """
    if not isinstance(item, Mapping):
        raise BadItem(f"must be a JSON object, got {type(item).__name__ if item is not None else 'null'}")
    bare = _is_bare_call(item)
    wrapped = {"type": CALL_TYPE, "data": item} if bare else item
    try:
        (parsed,) = parse_body(orjson.dumps(wrapped), "application/json",
                               routes=target.bare_routes if bare else target.routes)
    except EnvelopeError as exc:
        raise BadItem(f"{exc.message}: {exc.detail}" if exc.detail else exc.message) from None
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise BadItem(f"not serialisable as JSON: {exc}") from None
    envelope_id = item.get("id") if parsed.kind == "envelope" and not bare else None
    event_id = envelope_id if isinstance(envelope_id, str) and envelope_id else canonical_id(item)
    return make_event(collection=str(parsed.collection), document=parsed.document,
                      event_id=event_id, received_at=received_at,
                      published_at=item_version(item, parsed.document, parsed.occurred_at), source=SOURCE,
                      is_test=parsed.is_test, op=parsed.op)


# -- checkpoints ---------------------------------------------------------------------------------
_CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS sophia_backfill_checkpoints (
    key          text PRIMARY KEY,
    kind         text NOT NULL,
    source       text NOT NULL,
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    position     bigint NOT NULL DEFAULT 0,
    line         bigint NOT NULL DEFAULT 0,
    cursor       text,
    page         integer NOT NULL DEFAULT 0,
    total        bigint,
    published    bigint NOT NULL DEFAULT 0,
    skipped      bigint NOT NULL DEFAULT 0,
    bad_examples jsonb NOT NULL DEFAULT '[]'::jsonb,
    status       text NOT NULL DEFAULT 'running',
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
"""

_CP_COLUMNS = ("key", "kind", "source", "params", "position", "line", "cursor", "page", "total", "published",
               "skipped", "bad_examples", "status", "error")


@dataclass
class Checkpoint:
    key: str
    kind: str
    source: str
    params: dict[str, Any] = field(default_factory=dict)
    position: int = 0          # NDJSON: byte offset after the last published line; arrays: item index
    line: int = 0              # NDJSON: lines consumed up to ``position``
    cursor: str | None = None  # Gong: the cursor of the next page to fetch
    page: int = 0              # Gong: pages published
    total: int | None = None
    published: int = 0
    skipped: int = 0
    bad_examples: list[str] = field(default_factory=list)
    status: str = "running"    # running | done | failed
    error: str | None = None

    def note_bad(self, where: str, reason: str) -> None:
        self.skipped += 1
        if len(self.bad_examples) < MAX_BAD_EXAMPLES:
            self.bad_examples.append(f"{where}: {reason}"[:300])


class CheckpointStore:
    """Checkpoints in PostgreSQL on a connection of its own (autocommit: each save is durable).

    The same connection holds a session advisory lock on the checkpoint key while a run
    goes on, so two runs of one backfill never interleave; a killed run's lock goes with
    its connection.
    """

    def __init__(self, dsn: str) -> None:
        self.conn = connect(dsn)
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(72177303)")
            try:
                cur.execute(_CHECKPOINT_SCHEMA)
            finally:
                cur.execute("SELECT pg_advisory_unlock(72177303)")

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # pragma: no cover - closing a dead socket
            pass

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def try_lock(self, key: str) -> bool:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"sophia-backfill:{key}",))
            return bool(cur.fetchone()[0])

    def load(self, key: str) -> Checkpoint | None:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(_CP_COLUMNS)} FROM sophia_backfill_checkpoints WHERE key = %s", (key,))
            row = cur.fetchone()
        if row is None:
            return None
        data = dict(zip(_CP_COLUMNS, row, strict=True))
        data["params"] = data["params"] or {}
        data["bad_examples"] = list(data["bad_examples"] or [])
        return Checkpoint(**data)

    def save(self, cp: Checkpoint) -> None:
        values = [getattr(cp, c) for c in _CP_COLUMNS]
        values[_CP_COLUMNS.index("params")] = psycopg2.extras.Json(cp.params)
        values[_CP_COLUMNS.index("bad_examples")] = psycopg2.extras.Json(cp.bad_examples)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _CP_COLUMNS[1:])
        with self.conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO sophia_backfill_checkpoints ({', '.join(_CP_COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * len(_CP_COLUMNS))}) "
                f"ON CONFLICT (key) DO UPDATE SET {updates}, updated_at = now(), "
                f"finished_at = CASE WHEN EXCLUDED.status = 'done' THEN now() ELSE NULL END",
                values)

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(_CP_COLUMNS)}, updated_at FROM sophia_backfill_checkpoints "
                        "ORDER BY updated_at DESC LIMIT %s", (limit,))
            return [dict(zip(_CP_COLUMNS + ("updated_at",), r, strict=True)) for r in cur.fetchall()]


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class BackfillSummary:
    source: str
    key: str
    published: int = 0          # events published by this run
    skipped_bad: int = 0        # bad items over the whole backfill (this run and the runs it resumes)
    already_done: int = 0       # events earlier runs had published (the checkpoint)
    batches: int = 0
    status: str = "running"
    resumed: bool = False
    bad_examples: list[str] = field(default_factory=list)
    total: int | None = None
    error: str | None = None
    yielded_s: float = 0.0      # seconds the run held batches back while live events were behind

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "checkpoint": self.key, "status": self.status, "published": self.published,
                "skipped_bad": self.skipped_bad, "already_done": self.already_done, "batches": self.batches,
                "resumed": self.resumed, "bad_examples": self.bad_examples, "total": self.total,
                "error": self.error, "yielded_to_live_s": round(self.yielded_s, 1)}

    def line(self) -> str:
        text = (f"{self.status}: published {self.published}, skipped bad {self.skipped_bad}, "
                f"already done {self.already_done}")
        if self.yielded_s >= 0.05:
            text += f", waited {self.yielded_s:.1f} s for live events"
        return text + (f" ({self.error})" if self.error else "")


def paced_publish(settings: Settings, targets: list[str] | None = None, sender: routing.Sender | None = None
                  ) -> Publish:
    """Publish bulk batches through the bulk window (``sophia_tasks.pipeline.bulk_window``): at most
    ``SOPHIA_BULK_INFLIGHT`` in flight, so live events keep pool processes of their own."""
    window = window_for(settings)
    out = sender or sender_for(settings, load_spec(settings.flow_path))

    def publish(events: list[dict[str, Any]]) -> None:
        routing.send_validate(out, settings, events, lane="bulk", targets=targets, slot=window.acquire())

    publish.window = window  # type: ignore[attr-defined]  # the run reports how long it yielded
    return publish


class _Pacer:
    """Keeps a run under ``rate`` events per second (``--rate``), so a backfill can be gentle."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.start = time.monotonic()
        self.sent = 0

    def after(self, n: int) -> None:
        self.sent += n
        if self.rate:
            due = self.start + self.sent / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)


class _Run:
    """One pass over a source with its checkpoint: batching, publishing, saving, the summary."""

    def __init__(self, store: CheckpointStore, cp: Checkpoint, publish: Publish, batch_size: int,
                 progress: Progress | None, rate: float | None, strict: bool, target: Target) -> None:
        self.store = store
        self.target = target
        self.cp = cp
        self.publish = publish
        self.batch_size = max(1, batch_size)
        self.progress = progress
        self.pacer = _Pacer(rate)
        self.strict = strict
        self.pending: list[dict[str, Any]] = []
        self.summary = BackfillSummary(source=cp.source, key=cp.key, already_done=cp.published,
                                       resumed=cp.published > 0 or cp.position > 0 or cp.page > 0, total=cp.total)

    def add(self, item: Any, where: str) -> None:
        try:
            self.pending.append(item_to_event(item, format_version(utcnow()), self.target))
        except BadItem as exc:
            self.bad(where, str(exc))

    def bad(self, where: str, reason: str) -> None:
        if self.strict:
            raise BackfillError(f"{where}: {reason} (--strict: stopped; {self.cp.published} event(s) published "
                                f"before it)")
        self.cp.note_bad(where, reason)

    def flush(self, **position: Any) -> None:
        """Publish what is pending, then move the checkpoint past it (in that order: see the module doc)."""
        if self.pending:
            self.publish(self.pending)
            self.cp.published += len(self.pending)
            self.summary.published += len(self.pending)
            self.summary.batches += 1
            sent = len(self.pending)
            self.pending = []
        else:
            sent = 0
        for k, v in position.items():
            setattr(self.cp, k, v)
        self.store.save(self.cp)
        if sent:
            self.pacer.after(sent)

    def report(self, done: int, total: int) -> None:
        if self.progress:
            self.progress(done, total, self.summary.published)

    def finish(self, status: str, error: str | None = None) -> BackfillSummary:
        self.cp.status = status
        self.cp.error = error
        self.store.save(self.cp)
        self.summary.status = status
        self.summary.error = error
        self.summary.skipped_bad = self.cp.skipped
        self.summary.bad_examples = list(self.cp.bad_examples)
        self.summary.total = self.cp.total
        window = getattr(self.publish, "window", None)
        if window is not None:
            self.summary.yielded_s = window.yielded_s
        log.info("backfill %s: %s", self.summary.source, self.summary.line(),
                 extra={"stage": "backfill", "events": self.summary.published})
        return self.summary


def _store(settings: Settings, given: CheckpointStore | None) -> Any:
    """The given store (tests, callers that keep one open) or a fresh one closed after the run."""
    return contextlib.nullcontext(given) if given is not None else CheckpointStore(settings.postgres_dsn)


def _begin(store: CheckpointStore, key: str, kind: str, source: str, params: dict[str, Any],
           restart: bool) -> Checkpoint:
    if not store.try_lock(key):
        raise BackfillError(f"another backfill of {source} is running (checkpoint {key})")
    cp = store.load(key)
    if cp is None or restart:
        cp = Checkpoint(key=key, kind=kind, source=source, params=params)
        store.save(cp)
    elif cp.status != "done":
        cp.status, cp.error = "running", None
    return cp


def _already_done(cp: Checkpoint) -> BackfillSummary:
    return BackfillSummary(source=cp.source, key=cp.key, already_done=cp.published, skipped_bad=cp.skipped,
                           status="done", resumed=True, bad_examples=list(cp.bad_examples), total=cp.total)


# -- files -----------------------------------------------------------------------------------------
def file_checkpoint_key(path: Path) -> tuple[Path, str]:
    """The checkpoint key of a file: absolute path + size + mtime, so an edited file starts afresh.

    Cheap (no hashing of a large file before the first batch); copying a file elsewhere
    or touching it starts a new pass, which re-publishes harmlessly.
    """
    try:
        resolved = path.expanduser().resolve(strict=True)
        st = resolved.stat()
    except FileNotFoundError:
        raise BackfillError(f"{path}: no such file") from None
    except OSError as exc:
        raise BackfillError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not resolved.is_file():
        raise BackfillError(f"{path}: not a regular file")
    if not os.access(resolved, os.R_OK):
        raise BackfillError(f"{path}: cannot read: permission denied")
    return resolved, f"file:{resolved}:{st.st_size}:{st.st_mtime_ns}"


def _file_format(path: Path) -> str:
    """``array`` for a JSON document (``.json`` or a leading ``[``), else ``ndjson``."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return "array"
    return "array" if path.suffix.lower() == ".json" else "ndjson"


def _ndjson_lines(path: Path, offset: int, line: int) -> Iterator[tuple[int, int, bytes]]:
    """(offset after the line, line number, stripped bytes) from ``offset`` on."""
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            offset += len(raw)
            line += 1
            text = raw.strip()
            if line == 1 and text.startswith(b"\xef\xbb\xbf"):
                text = text[3:].strip()
            yield offset, line, text


def run_file_backfill(settings: Settings, path: str | Path, *, restart: bool = False, strict: bool = False,
                      batch_size: int = DEFAULT_BATCH, publish: Publish | None = None,
                      progress: Progress | None = None, rate: float | None = None,
                      store: CheckpointStore | None = None, collection: str | None = None) -> BackfillSummary:
    """Backfill one NDJSON or JSON-array file; resumes from its checkpoint unless ``restart``.
    Bare calls go to ``collection`` (default: the spec's route of ``call_completed``)."""
    target = target_for(load_spec(settings.flow_path), collection)
    resolved, key = file_checkpoint_key(Path(path))
    fmt = _file_format(resolved)
    size = resolved.stat().st_size
    with _store(settings, store) as store:
        cp = _begin(store, key, "file", str(resolved), {"format": fmt, "size": size}, restart)
        if cp.status == "done":
            return _already_done(cp)
        run = _Run(store, cp, publish or paced_publish(settings), batch_size, progress, rate, strict, target)
        try:
            if fmt == "ndjson":
                _run_ndjson(run, resolved, size)
            else:
                _run_array(run, resolved)
        except BackfillError as exc:
            run.finish("failed", str(exc))
            raise
        return run.finish("done")


def _run_ndjson(run: _Run, path: Path, size: int) -> None:
    cp = run.cp
    cp.total = size
    run.report(cp.position, size)
    offset, line = cp.position, cp.line
    try:
        for offset, line, text in _ndjson_lines(path, cp.position, cp.line):
            if not text:
                continue
            try:
                item = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                run.bad(f"line {line}", f"not valid JSON: {exc}")
                continue
            run.add(item, f"line {line}")
            if len(run.pending) >= run.batch_size:
                run.flush(position=offset, line=line)
                run.report(offset, size)
    except OSError as exc:
        raise BackfillError(f"{path}: read failed at byte {offset}: {exc.strerror or exc}") from None
    run.flush(position=offset, line=line)
    run.report(offset, size)


def _run_array(run: _Run, path: Path) -> None:
    try:
        data = orjson.loads(path.read_bytes().lstrip(b"\xef\xbb\xbf"))
    except OSError as exc:
        raise BackfillError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise BackfillError(f"{path}: not valid JSON (a .json file must be one JSON array): {exc}") from None
    items = data if isinstance(data, list) else [data]
    cp = run.cp
    cp.total = len(items)
    run.report(cp.position, len(items))
    index = cp.position
    for index in range(cp.position, len(items)):
        run.add(items[index], f"item {index + 1}")
        if len(run.pending) >= run.batch_size:
            run.flush(position=index + 1)
            run.report(index + 1, len(items))
    run.flush(position=len(items))
    run.report(len(items), len(items))


# -- Gong ------------------------------------------------------------------------------------------
def parse_date(value: str | datetime | None, what: str) -> datetime | None:
    """``2026-01-05``, an ISO-8601 datetime (naive = UTC) or unix seconds; BackfillError otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    moment = parse_time(value)
    if moment is None:
        raise BackfillError(f"{what}: {value!r} is not a date (2026-01-05) or an ISO-8601 datetime")
    return moment


def gong_client(settings: Settings, max_retries: int = 5) -> GongClient:
    if not settings.gong_access_key or not settings.gong_access_key_secret:
        raise BackfillError("SOPHIA_GONG_ACCESS_KEY and SOPHIA_GONG_ACCESS_KEY_SECRET must be set for --gong")
    return GongClient(settings.gong_api_url, settings.gong_access_key.reveal(),
                      settings.gong_access_key_secret.reveal(), max_retries=max_retries)


def run_gong_backfill(settings: Settings, since: str | datetime, until: str | datetime | None = None, *,
                      restart: bool = False, batch_size: int = DEFAULT_BATCH, publish: Publish | None = None,
                      progress: Progress | None = None, client: GongClient | None = None,
                      max_retries: int = 5, rate: float | None = None,
                      store: CheckpointStore | None = None, collection: str | None = None) -> BackfillSummary:
    """Backfill the calls Gong has between ``since`` and ``until`` (default: now), page by page.

    The checkpoint keeps the cursor of the next page; an open ``until`` is fixed at the
    first run, so a resumed run asks Gong for the same range.
    """
    start = parse_date(since, "--since")
    if start is None:
        raise BackfillError("--since is required with --gong")
    end = parse_date(until, "--until")
    if end is not None and end <= start:
        raise BackfillError(f"--until {format_version(end)} is not after --since {format_version(start)}")
    target = target_for(load_spec(settings.flow_path), collection)
    client = client or gong_client(settings, max_retries)
    key = f"gong:{client.base_url}:{format_version(start)}:{format_version(end) if end else 'open'}"
    with _store(settings, store) as store:
        cp = _begin(store, key, "gong", f"{client.base_url} calls {format_version(start)} .. "
                    f"{format_version(end) if end else 'now'}", {}, restart)
        if cp.status == "done":
            return _already_done(cp)
        if not cp.params.get("until"):
            cp.params = {"since": format_version(start), "until": format_version(end or utcnow())}
            store.save(cp)
        range_end = parse_time(cp.params["until"])
        assert range_end is not None
        run = _Run(store, cp, publish or paced_publish(settings), batch_size, progress, rate, strict=False,
                   target=target)
        fetched = cp.published + cp.skipped
        cursor, page_no = cp.cursor, cp.page
        if cp.page > 0 and not cp.cursor:
            return run.finish("done")  # every page was published; only the final save was lost
        try:
            for page in client.pages(start, range_end, cursor, first_number=cp.page + 1):
                if page.total_records is not None:
                    cp.total = page.total_records
                for i, call in enumerate(page.calls):
                    run.add(call, f"page {page.number} call {i + 1}")
                fetched += len(page.calls)
                cursor, page_no = page.next_cursor, page.number
                if len(run.pending) >= run.batch_size or not page.next_cursor:
                    run.flush(cursor=cursor, page=page_no)
                run.report(fetched, max(cp.total or 0, fetched))
        except GongAPIError as exc:
            # Pages fetched before the failing one are published; the checkpoint points at it.
            run.flush(cursor=exc.cursor, page=exc.page - 1)
            run.finish("failed", str(exc))
            raise BackfillError(f"{exc}; rerun the same command to resume from this page") from exc
        except BackfillError as exc:
            run.finish("failed", str(exc))
            raise
        return run.finish("done")
