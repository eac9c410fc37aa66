"""Erasure of one person by e-mail address (``sophia-tasks erase --email ADDRESS``).

Modelled on Gong's data-privacy API (``erase-data-for-email-address``): every document that
names the address, in any collection, is deleted from every place the service keeps it.

Where the address is looked for, and how a document is found in the targets: the targets hold
*derived* documents whose PII is masked (``derivations/pii.py``), so the address is usually not in
them. The journal is where documents are found: each row is the event as captured (collection +
document, sealed at rest), the address is matched in the opened event, and the document's key is
its collection's key pointer (``FlowSpec.collection(name).key_of``). The key is then erased from
every binding of that collection and of every derivation fed by it: a derivation's documents keep
the source key unless the derivation declares its own key pointer, and then the derivation is run
on the journaled document to learn the key. Dead letters are matched the same way (payload,
details, error). Each binding is also searched directly (``Materializer.search``), for documents
whose journal rows are gone (past retention) but whose stored text names the address.

The order never loses the way back to a key: find (journal, dead letters) → in-flight payload
(removed) → every target (searched, then erased) → only when every target answered, the journal
rows and dead letters found are deleted. A target that failed keeps them, so running the same
command again finds the same keys. A settle pass (``settle_seconds``) then repeats the in-flight
and target steps, and looks at what was journaled or dead-lettered meanwhile, for a batch a worker
held in memory while the first pass ran.

Erasure is a hard delete whatever a binding's ``soft_delete`` says: a tombstone of an erased key
goes too. See docs/operations.md ("Erasure") for what is not erased and why.
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator

import orjson
import redis as redis_lib

from sophia_tasks.core.addresses import AddressMatcher, address_hash, like_pattern
from sophia_tasks.core.documents import utcnow
from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.ingest.buffer import BUFFER_PREFIX, enabled_for
from sophia_tasks.materializers import get_materializer
from sophia_tasks.pipeline.claim_checks import PREFIX as BATCH_PREFIX
from sophia_tasks.pipeline.stages import derive_documents, validate_events
from sophia_tasks.settings import Settings
from sophia_tasks.store.db import connect, connections
from sophia_tasks.store.erasures import ErasureAudit
from sophia_tasks.store.journal import TABLE as JOURNAL
from sophia_tasks.store.journal import ensure_journal
from sophia_tasks.store.sealing import Sealer, sealer_for

log = logging.getLogger(__name__)

#: The stores every report lists, before the materializations (by name).
STORES = ("journal", "dead_letters", "ingest_buffer", "target_buffers", "claim_checks", "dedupe")
EVENTS_PREFIX = "sophia:events:"

#: progress(phase, done, total): a phase's rows looked at so far, of ``total`` (None: unknown).
Progress = Callable[[str, int, "int | None"], None]


@dataclass
class ErasureReport:
    audit_id: int
    email_sha256: str
    requested_by: str
    dry_run: bool
    counts: dict[str, int]
    keys: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"audit_id": self.audit_id, "email_sha256": self.email_sha256, "requested_by": self.requested_by,
                "dry_run": self.dry_run, "counts": self.counts, "total": self.total, "keys": self.keys,
                "errors": self.errors, "notes": self.notes}


def os_user() -> str:
    """The OS account running the command (the audit's default ``--by``), from the password database."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # pragma: no cover - no password database entry
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


# -- what was found ----------------------------------------------------------------------------
@dataclass
class Found:
    """What the finding steps gathered: rows to delete last, and the documents' keys."""

    journal_rows: list[tuple[str, datetime]] = field(default_factory=list)
    letter_ids: list[int] = field(default_factory=list)
    keys: dict[str, set[str]] = field(default_factory=dict)          # collection -> keys naming the person
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # kept where a derivation has its own key

    def add(self, spec: FlowSpec, collection: str, document: Any, key: str | None = None,
            event: Mapping[str, Any] | None = None) -> None:
        try:
            keyed = spec.collection(collection)
        except KeyError:  # a collection the spec no longer has: nothing of it is in a target
            return
        key = (keyed.key_of(document) if isinstance(document, Mapping) else None) or key
        if key:
            self.keys.setdefault(collection, set()).add(key)
        if event is not None and any(d.key != keyed.key for d in spec.derivations_of(collection)):
            self.events.setdefault(collection, []).append(dict(event))


def target_keys(spec: FlowSpec, found: Found) -> dict[str, set[str]]:
    """Keys to erase per collection or derivation: the found keys, carried to each derivation they feed."""
    out = {name: set(keys) for name, keys in found.keys.items()}
    for name, keys in found.keys.items():
        if name not in spec.collections:
            continue
        pointer = spec.collections[name].key
        for derivation in spec.derivations_of(name):
            mine = out.setdefault(derivation.name, set())
            if derivation.key == pointer:
                mine.update(keys)
            else:
                mine.update(_derived_keys(spec, name, derivation.name, found.events.get(name, [])))
    return out


def _derived_keys(spec: FlowSpec, collection: str, derivation: str, events: list[dict[str, Any]]) -> set[str]:
    """A derivation with its own key pointer: run it on the events to learn its documents' keys; an
    event it cannot take (invalid, or the transform fails) gives the pointer's value in the source."""
    keyed = spec.collection(derivation)
    keys = {k for e in events if isinstance(e.get("document"), Mapping) and (k := keyed.key_of(e["document"]))}
    valid = [e for e in events if isinstance(e.get("published_at"), str)]
    if valid:
        docs = validate_events(spec, valid).documents.get(collection, [])
        if docs:
            derived = derive_documents(spec, collection, docs).documents.get(derivation, [])
            keys.update(k for d in derived if (k := keyed.key_of(d)))
    return keys


# -- the journal and the dead letters ----------------------------------------------------------------
def _open_if_named(sealer: Sealer, matcher: AddressMatcher, value: Any) -> Any:
    """A stored value opened, or None when it cannot name the address: a sealed value's clear text is
    screened for the address before it is parsed (walking every event cost more than decrypting it)."""
    raw = sealer.open_bytes(value)
    if raw is None:
        return value
    return orjson.loads(raw) if matcher.may_be_in(raw) else None


def _journal_pages(dsn: str, sealer: Sealer, pattern: str, since: datetime | None, batch_size: int,
                   progress: Progress | None) -> Iterator[list[tuple[datetime, str, Any]]]:
    """The journal rows that may name the address: every sealed row, and the clear rows whose text holds
    it. One query streamed through a server-side cursor on a connection of its own (as a rebuild reads):
    keyset pages re-sorted the rows of a busy second at every page."""
    clauses = ["((event->>'$sealed') IS NOT NULL OR event::text ILIKE %s ESCAPE '!')"]
    params: list[Any] = [pattern]
    if since is not None:
        clauses.append("journaled_at >= %s")
        params.append(since)
    where = " AND ".join(clauses)
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            ensure_journal(cur, dsn)
            cur.execute(f"SELECT count(*) FROM {JOURNAL} WHERE {where}", params)
            total = int(cur.fetchone()[0])
        conn.commit()
        if progress:
            progress("journal", 0, total)
        done = 0
        with conn.cursor(name="sophia_erase_journal") as cur:
            cur.itersize = batch_size
            cur.execute(f"SELECT received_at, event_id, event FROM {JOURNAL} WHERE {where}", params)
            while rows := cur.fetchmany(batch_size):
                done += len(rows)
                yield rows
                if progress:
                    progress("journal", done, total)
        conn.commit()
    finally:
        conn.close()


def find_in_journal(settings: Settings, spec: FlowSpec, matcher: AddressMatcher, found: Found,
                    since: datetime | None = None, batch_size: int = 500, progress: Progress | None = None) -> int:
    """Journal rows naming the address: remembered for deletion, their documents' keys gathered."""
    n = 0
    sealer = sealer_for(settings)
    for page in _journal_pages(settings.postgres_dsn, sealer, like_pattern(matcher.address), since, batch_size,
                               progress):
        for received, event_id, stored in page:
            event = _open_if_named(sealer, matcher, stored)
            if event is None or not matcher.names(event):
                continue
            n += 1
            found.journal_rows.append((event_id, received))
            if isinstance(event, Mapping):
                found.add(spec, str(event.get("collection") or ""), event.get("document"), event=event)
    return n


def find_in_dead_letters(settings: Settings, spec: FlowSpec, matcher: AddressMatcher, found: Found,
                         since: datetime | None = None, batch_size: int = 500,
                         progress: Progress | None = None) -> int:
    """Dead letters whose payload, details or error names the address (sealed ones opened)."""
    sealer = sealer_for(settings)
    pattern = like_pattern(matcher.address)
    where = ("((payload->>'$sealed') IS NOT NULL OR (details->>'$sealed') IS NOT NULL OR payload::text ILIKE %s "
             "ESCAPE '!' OR details::text ILIKE %s ESCAPE '!' OR error ILIKE %s ESCAPE '!')")
    params: list[Any] = [pattern, pattern, pattern]
    if since is not None:
        where += " AND updated_at >= %s"
        params.append(since)
    dsn = settings.postgres_dsn
    with connections.transaction(dsn) as cur:
        cur.execute(f"SELECT count(*) FROM sophia_dead_letters WHERE {where}", params)
        total = int(cur.fetchone()[0])
    if progress:
        progress("dead letters", 0, total)
    last_id, done, n = 0, 0, 0
    while True:
        with connections.transaction(dsn) as cur:
            cur.execute(f"SELECT id, collection, document_key, payload, details, error FROM sophia_dead_letters "
                        f"WHERE {where} AND id > %s ORDER BY id LIMIT %s", [*params, last_id, batch_size])
            rows = cur.fetchall()
        if not rows:
            return n
        last_id = rows[-1][0]
        for letter_id, collection, document_key, payload, details, error in rows:
            named = matcher.in_text(error or "")
            for opened in (_open_if_named(sealer, matcher, payload), _open_if_named(sealer, matcher, details)):
                named = named or matcher.names(opened)
            if not named:
                continue
            payload = sealer.open(payload)
            n += 1
            found.letter_ids.append(int(letter_id))
            if isinstance(payload, Mapping) and isinstance(payload.get("document"), Mapping) and "event_id" in payload:
                # A validate-stage letter holds the event as captured.
                found.add(spec, str(payload.get("collection") or collection), payload["document"], document_key,
                          event=payload)
            else:
                found.add(spec, collection, payload, document_key)
        done += len(rows)
        if progress:
            progress("dead letters", done, total)


def delete_journal_rows(dsn: str, rows: list[tuple[str, datetime]], batch_size: int = 500) -> int:
    deleted = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        with connections.transaction(dsn) as cur:
            cur.execute(f"DELETE FROM {JOURNAL} WHERE (event_id, received_at) IN "
                        "(SELECT * FROM unnest(%s::text[], %s::timestamptz[]))",
                        ([r[0] for r in chunk], [r[1] for r in chunk]))
            deleted += cur.rowcount
    return deleted


def delete_letters(dsn: str, ids: list[int], batch_size: int = 500) -> int:
    deleted = 0
    for start in range(0, len(ids), batch_size):
        with connections.transaction(dsn) as cur:
            cur.execute("DELETE FROM sophia_dead_letters WHERE id = ANY(%s)", (ids[start:start + batch_size],))
            deleted += cur.rowcount
    return deleted


# -- payload in flight (the broker's Redis) --------------------------------------------------------------
class InFlight:
    """The ingest buffer and its cuts (captured events), the target buffers and their cuts, and the
    claim-checked batches (derived documents), all in the broker's Redis. Events are matched by the
    address; derived documents (masked) by their key too."""

    def __init__(self, client: redis_lib.Redis, spec: FlowSpec, matcher: AddressMatcher, dry_run: bool) -> None:
        self.client = client
        self.spec = spec
        self.matcher = matcher
        self.dry_run = dry_run
        self.counts = {"ingest_buffer": 0, "target_buffers": 0, "claim_checks": 0}

    def _lists(self) -> list[bytes]:
        names: list[bytes] = []
        for pattern in (BUFFER_PREFIX + "*", EVENTS_PREFIX + "*"):
            names += self.client.scan_iter(match=pattern, count=1000, _type="list")
        return names

    def _items(self, name: bytes) -> Iterator[bytes]:
        start = 0
        while items := self.client.lrange(name, start, start + 499):
            yield from items
            start += len(items)

    def _drop(self, name: bytes, raw: bytes) -> int:
        return 1 if self.dry_run else int(self.client.lrem(name, 1, raw))

    def events(self, found: Found) -> None:
        """Captured events not yet validated (so not journaled yet): dropped when they name the address."""
        for name in self._lists():
            for raw in list(self._items(name)):
                item = _loads(raw)
                if _is_event(item) and self.matcher.names(item):
                    self.counts["ingest_buffer"] += self._drop(name, raw)
                    found.add(self.spec, str(item.get("collection") or ""), item.get("document"), event=item)

    def _hit(self, document: Any, keys: dict[str, set[str]]) -> bool:
        if not isinstance(document, Mapping):
            return False
        meta = document.get("_meta")
        collection = meta.get("collection") if isinstance(meta, Mapping) else None
        if isinstance(collection, str) and collection in keys:
            try:
                key = self.spec.collection(collection).key_of(document)
            except KeyError:
                key = None
            if key in keys[collection]:
                return True
        return self.matcher.names(document)

    def documents(self, keys: dict[str, set[str]]) -> None:
        """Derived documents waiting for a target: dropped when their key is erased or they name the address."""
        for name in self._lists():
            for raw in list(self._items(name)):
                item = _loads(raw)
                if not _is_event(item) and self._hit(item, keys):
                    self.counts["target_buffers"] += self._drop(name, raw)
        for name in self.client.scan_iter(match=BATCH_PREFIX + "*", count=1000, _type="string"):
            self.counts["claim_checks"] += self._batch(name, keys)

    def _batch(self, name: bytes, keys: dict[str, set[str]]) -> int:
        """Rewrite one claim-checked batch without the erased documents (a WATCH transaction, so a
        batch released meanwhile is never written back); the last one deletes it, as a release would."""
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(name)
                    blob = pipe.get(name)
                    documents = _loads(blob) if blob is not None else None
                    if not isinstance(documents, list):
                        return 0
                    keep = [d for d in documents if not self._hit(d, keys)]
                    removed = len(documents) - len(keep)
                    if removed == 0 or self.dry_run:
                        return removed
                    pipe.multi()
                    if keep:
                        pipe.set(name, orjson.dumps(keep), keepttl=True)
                    else:
                        pipe.delete(name, name + b":pending")
                    pipe.execute()
                    return removed
                except redis_lib.WatchError:
                    continue


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _is_event(item: Any) -> bool:
    return isinstance(item, Mapping) and "event_id" in item and "document" in item and "collection" in item


# -- the targets --------------------------------------------------------------------------------------
def erase_targets(settings: Settings, spec: FlowSpec, address: str, keys: dict[str, set[str]], dry_run: bool,
                  errors: dict[str, str], search: bool = True, progress: Progress | None = None) -> dict[str, int]:
    """Search every binding for the address (its hits join the keys of that binding's collection, for
    every target), then erase (or, dry, count) the keys in every binding. A target that fails is
    reported in ``errors`` and the others go on."""
    mats = list(spec.materializations.values())
    if search:
        for i, mat in enumerate(mats):
            if progress:
                progress(f"search {mat.name}", i, len(mats))
            try:
                writer = get_materializer(mat.endpoint, settings, spec)
                for binding in mat.bindings:
                    keys.setdefault(binding.source, set()).update(writer.search(binding, address))
            except Exception as exc:  # one target down must not stop the others
                errors[mat.name] = _reason(exc, address)
    counts: dict[str, int] = {}
    for mat in mats:
        if mat.name in errors:
            continue
        try:
            writer = get_materializer(mat.endpoint, settings, spec)
            n = 0
            for binding in mat.bindings:
                wanted = sorted(keys.get(binding.source, ()))
                n += writer.count_keys(binding, wanted) if dry_run else writer.erase(binding, wanted)
            counts[mat.name] = n
        except Exception as exc:
            errors[mat.name] = _reason(exc, address)
    return counts


def _reason(exc: BaseException, address: str) -> str:
    """A one-line error for the report and the audit, with the address blanked out should a server echo it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return re.sub(re.escape(address), "<address>", f"{type(exc).__name__}: {text}"[:500], flags=re.IGNORECASE)


# -- the command ----------------------------------------------------------------------------------------
def erase_address(settings: Settings, spec: FlowSpec, address: str, *, dry_run: bool = False, by: str | None = None,
                  settle_seconds: float = 0.0, batch_size: int = 500, progress: Progress | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> ErasureReport:
    """Erase (or with ``dry_run`` only count) every document naming ``address``; audited either way."""
    matcher = AddressMatcher(address)  # raises AddressError for something that is not an address
    audit = ErasureAudit(settings.postgres_dsn)
    report = ErasureReport(audit_id=0, email_sha256=address_hash(address), requested_by=by or os_user(),
                           dry_run=dry_run, counts={name: 0 for name in STORES})
    report.counts.update({name: 0 for name in spec.materializations})
    report.audit_id = audit.start(report.requested_by, report.email_sha256, dry_run)
    found = Found(keys=audit.erased_keys(report.email_sha256))  # what earlier runs erased, erased again
    try:
        started = utcnow()
        found = _one_pass(settings, spec, matcher, report, dry_run, None, batch_size, progress, known=found,
                          search=True)
        if settle_seconds > 0 and not dry_run and not report.errors:
            if progress:
                progress(f"settle {settle_seconds:g}s", 0, None)
            sleep(settle_seconds)
            found = _one_pass(settings, spec, matcher, report, dry_run, started, batch_size, progress, known=found,
                              search=False)
        report.keys = {name: len(keys) for name, keys in sorted(target_keys(spec, found).items()) if keys}
    except Exception as exc:
        report.errors.setdefault("erase", _reason(exc, matcher.address))
        audit.finish(report.audit_id, report.counts, report.errors, _erased(spec, found, dry_run, matcher))
        raise
    if not enabled_for(settings):
        report.notes.append("the broker is not Redis: events queued in it cannot be searched (they are "
                            "journaled when validated; run erase again once the queues have drained)")
    if report.errors:
        report.notes.append("some targets failed: the journal rows and dead letters were kept so that running "
                            "the same command again finds the same documents")
    audit.finish(report.audit_id, report.counts, report.errors or None, _erased(spec, found, dry_run, matcher))
    return report


def _erased(spec: FlowSpec, found: Found, dry_run: bool, matcher: AddressMatcher) -> dict[str, list[str]] | None:
    """The keys for the audit row (none for a dry run: it erased nothing). A key that holds the address
    itself (a collection keyed by e-mail) is left out: the audit never keeps the address in clear."""
    if dry_run:
        return None
    out = {name: sorted(k for k in keys if not matcher.in_text(k)) for name, keys in target_keys(spec, found).items()}
    return {name: keys for name, keys in out.items() if keys}


def _one_pass(settings: Settings, spec: FlowSpec, matcher: AddressMatcher, report: ErasureReport, dry_run: bool,
              since: datetime | None, batch_size: int, progress: Progress | None, known: Found,
              search: bool) -> Found:
    """Find, clear in-flight payload, erase the targets, then (all targets done) the journal and letters.

    ``known`` carries keys to erase again (earlier runs', the first pass's); ``since`` (the settle pass)
    limits the journal and the dead letters to what came after the first pass began; ``search`` looks
    through every target's documents for the address (the first pass only: it reads whole tables)."""
    found = Found()
    find_in_journal(settings, spec, matcher, found, since, batch_size, progress)
    find_in_dead_letters(settings, spec, matcher, found, since, batch_size, progress)
    for name, keys in known.keys.items():
        found.keys.setdefault(name, set()).update(keys)
    for name, events in known.events.items():
        found.events.setdefault(name, []).extend(events)
    if enabled_for(settings):
        client = redis_lib.Redis.from_url(settings.broker_url, socket_connect_timeout=5, socket_timeout=30)
        try:
            flight = InFlight(client, spec, matcher, dry_run)
            if progress:
                progress("in flight", 0, None)
            flight.events(found)
            keys = target_keys(spec, found)
            flight.documents(keys)
        finally:
            client.close()
        for name, n in flight.counts.items():
            report.counts[name] += n
    keys = target_keys(spec, found)
    counts = erase_targets(settings, spec, matcher.address, keys, dry_run, report.errors, search=search,
                           progress=progress)
    for name, n in counts.items():
        report.counts[name] += n
    # Keys found by searching the targets join what the settle pass erases again.
    for name, ks in keys.items():
        found.keys.setdefault(name, set()).update(ks)
    if dry_run:
        report.counts["journal"] += len(found.journal_rows)
        report.counts["dead_letters"] += len(found.letter_ids)
    elif not report.errors:
        report.counts["journal"] += delete_journal_rows(settings.postgres_dsn, found.journal_rows, batch_size)
        report.counts["dead_letters"] += delete_letters(settings.postgres_dsn, found.letter_ids, batch_size)
    return found
