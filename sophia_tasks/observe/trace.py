"""Where is this event? Trace records of each event's path, and the reader behind `sophia-tasks trace`.

Why records of our own: the journal says an event arrived and the dead letters say where one
failed, but neither says which batch carried it, when each stage saw it, which version each
target took or how many attempts that cost. So each stage adds a few fields to one Redis hash
per event, ``sophia:trace:<event id>`` on the cache's Redis, kept for the dedupe window:

* the web (the same Lua call that claims the id for dedupe): ``received``, ``source``,
  ``credential`` (the principal's name: method and an 8-hex fingerprint, never the secret);
  a duplicate delivery counts ``duplicates`` and stamps ``duplicate_at``;
* validate: ``validated`` (epoch s), ``batch`` (task id), ``cut`` (the ingest cut, without its
  ``sophia:events:`` prefix), ``version`` (``_meta.published_at``), ``key``, and ``valid`` only when
  not ok (invalid, test); the key also indexes the event under ``sophia:trace:key:<key>`` (a sorted
  set) so a trace can start from a document's key;
* derive: ``derived``, and ``derive`` = failed when it failed;
* each target: ``w:<target>`` = ``epoch s[|attempt]`` once written (the attempt when not the first),
  ``f:<target>`` = ``epoch s|attempt|reason|retry or dead-lettered`` when a write failed.

Only what the journal cannot tell is kept (its collection, payload and lane are read from there),
each value once: about 500 bytes of Redis memory per event for the window (MEMORY USAGE of a
written event, 488 bytes, plus its share of the key index).

Cost: the fields of a whole batch go in one Lua call queued on the stats pipeline the stage
already sends (``sophia_tasks.observe.stats.Stats.record``): no round trip of its own, and the
hash's expiry is set once (``EXPIRE … NX``). ``SOPHIA_TRACE=0`` turns recording off.
The reader joins these fields with the journal rows and the dead letters of the event.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import redis as redis_lib

from sophia_tasks.core.documents import meta, parse_time

log = logging.getLogger(__name__)

PREFIX = "sophia:trace:"
CUT_PREFIX = "sophia:events:"
KEY_INDEX = "sophia:trace:key:"
#: Events listed for one key (newest first).
KEY_EVENTS_LIMIT = 50

# ARGV: ttl, then per event: event id, field count k, k field/value pairs. A field named ``key`` also
# indexes the event under its key. EXPIRE NX: the web set the expiry when the event arrived; an event
# that never passed the web (backfill, rebuild) gets it from its first stage.
RECORD_LUA = """
local ttl = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1])
local i, n = 2, #ARGV
while i <= n do
  local id = ARGV[i]
  local k = tonumber(ARGV[i + 1])
  local key = 'sophia:trace:' .. id
  local args = {}
  for j = 1, 2 * k do
    args[j] = ARGV[i + 1 + j]
    if j % 2 == 0 and ARGV[i + j] == 'key' then
      local index = 'sophia:trace:key:' .. ARGV[i + 1 + j]
      redis.call('ZADD', index, now, id)
      redis.call('ZREMRANGEBYSCORE', index, '-inf', now - ttl)
      redis.call('EXPIRE', index, ttl)
    end
  end
  if k > 0 then
    redis.call('HSET', key, unpack(args))
    redis.call('EXPIRE', key, ttl, 'NX')
  end
  i = i + 2 + 2 * k
end
return 0
"""


class TraceBatch:
    """The trace fields of one batch, sent with the stage's stats round trip (never on their own)."""

    __slots__ = ("args",)

    def __init__(self, ttl: int) -> None:
        self.args: list[Any] = [int(ttl)]

    def add(self, event_id: Any, fields: list[Any]) -> None:
        if event_id:
            self.args.append(event_id)
            self.args.append(len(fields) // 2)
            self.args.extend(fields)

    def __bool__(self) -> bool:
        return len(self.args) > 1


def _batch(settings: Any) -> TraceBatch | None:
    return TraceBatch(settings.dedupe_window_seconds) if settings.trace_enabled else None


def _now() -> str:
    return f"{time.time():.3f}"


def validated(settings: Any, spec: Any, result: Any, task_id: str | None, cut: str | None) -> TraceBatch | None:
    """Fields of a validated batch: ``result`` is a ``pipeline.stages.ValidateResult``."""
    batch = _batch(settings)
    if batch is None:
        return None
    head = ["validated", _now(), "batch", task_id or "", "cut", (cut or "").removeprefix(CUT_PREFIX)]
    for name, docs in result.documents.items():
        key_of = spec.collection(name).key_of
        for doc in docs:
            m = meta(doc)
            try:
                key = key_of(doc)
            except Exception:  # a key the schema let through but the pointer cannot read: no index
                key = None
            fields = [*head, "version", m.get("published_at") or ""]
            if key is not None:
                fields += ["key", str(key)]
            batch.add(m.get("event_id"), fields)
    for doc in result.tests:
        batch.add(meta(doc).get("event_id"), [*head, "valid", "test"])
    for letter in result.letters:
        batch.add(letter.event_id, [*head, "valid", "invalid"])
    return batch


def derived(settings: Any, result: Any) -> TraceBatch | None:
    """Fields of a derived batch: ``result`` is a ``pipeline.stages.DeriveResult``."""
    batch = _batch(settings)
    if batch is None:
        return None
    at = _now()
    seen: set[Any] = set()
    for letter in result.letters:
        seen.add(letter.event_id)
        batch.add(letter.event_id, ["derived", at, "derive", "failed"])
    for docs in result.documents.values():
        for doc in docs:
            event_id = meta(doc).get("event_id")
            if event_id not in seen:
                seen.add(event_id)
                batch.add(event_id, ["derived", at])
    return batch


def written(settings: Any, target: str, documents: list[dict[str, Any]], failed_ids: set[int],
            attempt: int) -> TraceBatch | None:
    """Fields of a batch written to ``target`` (documents whose ``id()`` is in ``failed_ids`` were not)."""
    batch = _batch(settings)
    if batch is None:
        return None
    name = "w:" + target
    value = _now() if attempt == 1 else f"{_now()}|{attempt}"
    for doc in documents:
        if id(doc) not in failed_ids:
            batch.add(meta(doc).get("event_id"), [name, value])
    return batch


def failed(settings: Any, target: str, retryable: list[dict[str, Any]], keyless: list[dict[str, Any]],
           attempt: int, reason: str, retrying: bool) -> TraceBatch | None:
    """Fields of the documents a write to ``target`` failed: ``retryable`` ones are re-sent with backoff
    when ``retrying``, else dead-lettered; ``keyless`` ones are dead-lettered at once (no retry can help)."""
    batch = _batch(settings)
    if batch is None:
        return None
    at = _now()
    for docs, then in ((retryable, "retry" if retrying else "dead-lettered"), (keyless, "dead-lettered")):
        value = f"{at}|{attempt}|{reason}|{then}"
        for doc in docs:
            batch.add(meta(doc).get("event_id"), ["f:" + target, value])
    return batch


# -- reading ---------------------------------------------------------------------------------------
def window_text(settings: Any) -> str:
    seconds = int(settings.dedupe_window_seconds)
    span = f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds} s"
    return f"traces go back {span} (SOPHIA_DEDUPE_WINDOW_SECONDS={seconds})"


def not_found_message(settings: Any, what: str) -> str:
    """The one sentence the CLI and the web answer for an unknown id or key."""
    return f"no trace of {what}: unknown, or older than the trace window; {window_text(settings)}"


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _took(at: float | None, previous: float | None) -> float | None:
    return round(at - previous, 3) if at is not None and previous is not None else None


def _letter(letter: Any) -> dict[str, Any]:
    return {"id": letter.id, "error": letter.error, "details": letter.details, "attempts": letter.attempts,
            "status": letter.status, "created_at": letter.created_at.isoformat() if letter.created_at else None}


def read_fields(client: redis_lib.Redis, event_id: str) -> dict[str, str]:
    raw = client.hgetall(PREFIX + event_id)
    return {k.decode(): v.decode() for k, v in raw.items()}


def build_event_trace(spec: Any, event_id: str, fields: dict[str, str], journal: list[dict[str, Any]],
                      letters: list[Any]) -> dict[str, Any] | None:
    """The trace of one event from its trace fields, journal rows and dead letters (None: none of them)."""
    if not fields and not journal and not letters:
        return None
    row = journal[0] if journal else {}
    event = row.get("event") if isinstance(row.get("event"), dict) else {}
    received_at = parse_time(fields.get("received") or event.get("received_at"))
    if received_at is None and row.get("received_at") is not None:
        received_at = row["received_at"]
    received = received_at.timestamp() if received_at is not None else None
    collection = row.get("collection") or event.get("collection")
    key = fields.get("key")
    if key is None and event.get("document") is not None and collection in spec.collections:
        try:
            found = spec.collection(collection).key_of(event["document"])
            key = str(found) if found is not None else None
        except Exception:
            key = None
    version = fields.get("version") or row.get("published_at") or event.get("published_at")
    by_stage: dict[tuple[str, str | None], Any] = {}
    for letter in letters:  # the newest letter of each stage and target
        by_stage[(letter.stage, letter.target)] = letter

    validated_at = _float(fields.get("validated"))
    derived_at = _float(fields.get("derived"))
    valid = fields.get("valid") or ("ok" if validated_at is not None else None)
    if valid is None and ("validate", None) in by_stage:
        valid = "invalid"
    validate: dict[str, Any] = {"result": valid or ("pending" if not validated_at else None),
                                "at": _iso(validated_at), "took_s": _took(validated_at, received)}
    if ("validate", None) in by_stage:
        validate["dead_letter"] = _letter(by_stage[("validate", None)])
    derive_result = fields.get("derive") or ("ok" if derived_at is not None else None)
    if derive_result is None and ("derive", None) in by_stage:
        derive_result = "failed"
    derive: dict[str, Any] = {"result": derive_result or ("skipped" if valid in ("invalid", "test") else "pending"),
                              "at": _iso(derived_at), "took_s": _took(derived_at, validated_at)}
    if ("derive", None) in by_stage:
        derive["dead_letter"] = _letter(by_stage[("derive", None)])

    names: list[str] = []
    if collection in spec.collections or collection in spec.derivations:
        sources = [collection] + [d.name for d in spec.derivations_of(collection)]
        names = [m.name for s in sources for m in spec.materializations_of(s)]
    names += [f[2:] for f in fields if f.startswith(("w:", "f:"))]
    names += [t for (stage, t) in by_stage if stage == "materialize" and t]
    targets: dict[str, dict[str, Any]] = {}
    for target in dict.fromkeys(names):
        info: dict[str, Any] = {"status": "pending"}
        if valid in ("invalid", "test") or derive_result == "failed":
            info["status"] = "not sent"
        w = fields.get("w:" + target)
        if w:
            at_raw, attempt = (w.split("|") + [""])[:2]
            at = _float(at_raw)
            info = {"status": "written", "version": version, "written_at": _iso(at),
                    "attempts": int(attempt or 1), "took_s": _took(at, derived_at or validated_at)}
        f = fields.get("f:" + target)
        if f:
            at_raw, attempt, reason, next_step = (f.split("|") + ["", "", "", ""])[:4]
            info["last_failure"] = {"at": _iso(_float(at_raw)), "attempt": int(attempt or 1), "reason": reason,
                                    "then": next_step}
            if not w:
                info["status"] = "retrying" if next_step == "retry" else "dead-lettered"
                info["attempts"] = int(attempt or 1)
        letter = by_stage.get(("materialize", target))
        if letter is not None:
            info["dead_letter"] = _letter(letter)
            if not w:
                info["status"] = "dead-lettered"
        targets[target] = info

    duplicates = int(fields.get("duplicates") or 0)
    return {
        "event_id": event_id,
        "collection": collection,
        "key": key,
        "received": {"at": _iso(received), "source": fields.get("source") or row.get("source"),
                     "credential": fields.get("credential"), "lane": row.get("lane")},
        "dedupe": {"result": "accepted", "duplicates": duplicates,
                   "last_duplicate_at": _iso(_float(fields.get("duplicate_at")))},
        "version": version,
        "batch": {"validate_task": fields.get("batch") or None,
                  "cut": CUT_PREFIX + fields["cut"] if fields.get("cut") else None},
        "validate": validate,
        "derive": derive,
        "targets": targets,
        "journal": [{"received_at": r["received_at"].isoformat() if r.get("received_at") else None,
                     "journaled_at": r["journaled_at"].isoformat() if r.get("journaled_at") else None,
                     "lane": r.get("lane"), "source": r.get("source"), "published_at": r.get("published_at")}
                    for r in journal],
        "trace_recorded": bool(fields),
    }


class TraceReader:
    """Joins the trace fields (cache Redis), the journal and the dead letters; ``stores`` opens them."""

    def __init__(self, settings: Any, spec: Any, client: redis_lib.Redis, dlq: Any, sealer: Any = None) -> None:
        self.settings = settings
        self.spec = spec
        self.client = client
        self.dlq = dlq
        self.sealer = sealer

    def event(self, event_id: str) -> dict[str, Any] | None:
        from sophia_tasks.store.journal import events_by_id

        fields = read_fields(self.client, event_id)
        since = datetime.now(timezone.utc) - timedelta(seconds=self.settings.dedupe_window_seconds)
        journal = events_by_id(self.settings.postgres_dsn, [event_id], since, self.sealer)
        letters = self.dlq.for_events([event_id])
        trace = build_event_trace(self.spec, event_id, fields, journal, letters)
        if trace is not None:
            trace["kept_for"] = window_text(self.settings)
        return trace

    def key(self, key: str, current: bool = True) -> dict[str, Any] | None:
        """Every traced event of a document key, newest first, and each target's current version."""
        ids = [i.decode() for i in self.client.zrevrange(KEY_INDEX + key, 0, KEY_EVENTS_LIMIT - 1)]
        if not ids:
            return None
        events = []
        for event_id in ids:
            trace = self.event(event_id)
            if trace is not None:
                events.append(trace)
        if not events:
            return None
        events.sort(key=lambda t: t["received"]["at"] or "", reverse=True)
        collections = {str(e["collection"]) for e in events if e.get("collection")}
        return {"key": key, "events": events,
                "current": self.current_versions(key, collections or None) if current else {},
                "kept_for": window_text(self.settings)}

    def current_versions(self, key: str, collections: set[str] | None = None) -> dict[str, Any]:
        """Each target's document for ``key``: its ``_meta`` version and event. Only the bindings fed by
        ``collections`` (the key's events' collections, and their derivations) when given, named by their
        materialization alone when it has one such binding; else every binding, as ``target/source``."""
        from sophia_tasks.materializers import get_materializer

        fed: set[str] | None = None
        if collections is not None:
            fed = set(collections) | {d.name for c in collections for d in self.spec.derivations_of(c)}
        out: dict[str, Any] = {}
        for mat in self.spec.materializations.values():
            bindings = [b for b in mat.bindings if fed is None or b.source in fed]
            for binding in bindings:
                name = mat.name if len(bindings) == 1 else f"{mat.name}/{binding.source}"
                try:
                    doc = get_materializer(mat.endpoint, self.settings, self.spec).fetch(binding, key)
                except Exception as exc:  # one target down must not hide the others
                    out[name] = {"error": str(exc).strip().splitlines()[0][:300] if str(exc) else repr(exc)}
                    continue
                if doc is None:
                    out[name] = {"version": None}
                    continue
                m = meta(doc)
                out[name] = {"version": m.get("published_at"), "event_id": m.get("event_id"),
                             "deleted": m.get("op") == "d" or None}
        return out


def reader_for(settings: Any, spec: Any, client: redis_lib.Redis | None = None) -> TraceReader:
    """A reader on the stores these settings name (the cache's Redis unless ``client`` is given)."""
    from sophia_tasks.store.deadletter import DeadLetterStore
    from sophia_tasks.store.sealing import sealer_for

    sealer = sealer_for(settings)
    client = client or redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    return TraceReader(settings, spec, client, DeadLetterStore(settings.postgres_dsn, sealer=sealer), sealer)
