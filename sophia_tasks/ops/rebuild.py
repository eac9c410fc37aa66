"""Rebuild a target from the event journal: republish its events on the bulk lane.

Every event keeps its original version, so a rebuild over live data changes nothing
that is already newer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from sophia_tasks.core.documents import format_version
from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.materializers import get_materializer
from sophia_tasks.ops.backfill import paced_publish
from sophia_tasks.pipeline.stages import validate_events
from sophia_tasks.settings import Settings
from sophia_tasks.store.journal import count_events, iter_batches
from sophia_tasks.store.sealing import sealer_for


# -- rebuild --------------------------------------------------------------------------------
@dataclass
class RebuildSummary:
    target: str
    since: str | None
    total: int = 0
    published: int = 0
    skipped_invalid: int = 0
    batches: int = 0
    tables: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "since": self.since, "journaled": self.total, "published": self.published,
                "skipped_invalid": self.skipped_invalid, "batches": self.batches, "tables_ready": self.tables}


def collections_feeding(spec: FlowSpec, target: str) -> list[str]:
    """The source collections whose events end up in ``target`` (directly or through a derivation)."""
    mat = spec.materializations[target]
    bound = {b.source for b in mat.bindings}
    out = []
    for name in spec.collections:
        if name in bound or any(d.name in bound for d in spec.derivations_of(name)):
            out.append(name)
    return out


def prepare_target(settings: Settings, spec: FlowSpec, target: str) -> list[str]:
    """Create the target's tables in this process before anything is published.

    A worker caches "table ready" per connection; after a ``DROP TABLE`` its cache is
    wrong, so the rebuild recreates the table itself (CREATE IF NOT EXISTS) first.
    """
    mat = spec.materializations[target]
    writer = get_materializer(mat.endpoint, settings, spec)
    ready = []
    for binding in mat.bindings:
        ensure = getattr(writer, "ensure_table", None)
        if ensure is not None:
            ensure(binding)
            ready.append(str(binding.table))
    return ready


def rebuild(settings: Settings, spec: FlowSpec, target: str, since: datetime | None = None,
            until: datetime | None = None, batch_size: int = 500,
            publish: Callable[[list[dict[str, Any]]], None] | None = None,
            progress: Callable[[int, int], None] | None = None) -> RebuildSummary:
    """Republish the journal to one target, on the bulk lane, keeping every event's original version.

    Events the schema refuses are skipped here (they were dead-lettered when they first
    came), so a rebuild never files the same dead letter twice.
    """
    if target not in spec.materializations:
        raise KeyError(f"unknown target {target!r}; the flow spec has {', '.join(sorted(spec.materializations))}")
    if publish is None:
        publish = paced_publish(settings, targets=[target])

    summary = RebuildSummary(target=target, since=format_version(since) if since else None)
    summary.tables = prepare_target(settings, spec, target)
    collections = collections_feeding(spec, target)
    summary.total = count_events(settings.postgres_dsn, since, until, collections)
    done = 0
    if progress:
        progress(0, summary.total)
    for batch in iter_batches(settings.postgres_dsn, batch_size, since, until, collections,
                              sealer=sealer_for(settings)):
        checked = validate_events(spec, batch)
        bad = {letter.event_id for letter in checked.letters}
        good = [e for e in batch if e.get("event_id") not in bad]
        summary.skipped_invalid += len(batch) - len(good)
        if good:
            publish(good)
            summary.published += len(good)
            summary.batches += 1
        done += len(batch)
        if progress:
            progress(done, summary.total)
    return summary
