"""What `sophia-tasks status` reports: per flow and target lag, throughput, errors, backlog.

Everything is read from the same places as /metrics (the shared counters in
Redis, the broker, the dead-letter store), so the command and the dashboard
never disagree. Lag quantiles come from the same histogram buckets as
``estuary_flow_lag_seconds``: over the counters' lifetime, and over the last
alert window when ``sophia.alerts`` has kept a snapshot that old.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import IO, Any, Mapping

from sophia_tasks.core.flowspec import FlowSpec
from sophia_tasks.messaging.routing import materialize_queue
from sophia_tasks.observe.alerts import firing_alerts, window_baseline
from sophia_tasks.observe.counts import (
    diff_counters,
    empty_counts,
    lag_quantiles,
    pending_dead_letters,
    target_counts,
)
from sophia_tasks.observe.paused import paused_bindings
from sophia_tasks.observe.queues import broker_snapshot
from sophia_tasks.observe.stats import Stats, parse_field
from sophia_tasks.settings import Settings


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def collect_status(settings: Settings, spec: FlowSpec, now: float | None = None) -> dict[str, Any]:
    """The whole report as plain data (what ``status --json`` prints)."""

    now = now or time.time()
    stats = Stats(settings.redis_url)
    counters = stats.counters()
    last_written = stats.last_written()
    throughput = stats.throughput_all()
    config_window, baseline = window_baseline(stats.client, spec, now)
    windowed = target_counts(diff_counters(counters, baseline)) if baseline is not None else {}
    errors: list[str] = []
    try:
        snap = broker_snapshot(settings, spec)
    except Exception as exc:  # the broker is down: report what we can
        snap = None
        errors.append(f"broker unreachable: {exc}")
    try:
        dead = pending_dead_letters(settings)
    except Exception as exc:
        dead = None
        errors.append(f"dead-letter store unreachable: {str(exc).strip().splitlines()[0] if str(exc) else exc}")
    counts = target_counts(counters)
    waiting = snap.waiting_by_target() if snap else {}
    sizes = snap.bytes_by_target() if snap else {}
    documents = snap.documents_by_target() if snap else {}

    targets: list[dict[str, Any]] = []
    for name, mat in spec.materializations.items():
        c = counts.get(name) or empty_counts()
        p50, p99 = lag_quantiles(c)
        w = windowed.get(name)
        last = last_written.get(name)
        targets.append({
            "target": name,
            "endpoint": mat.endpoint,
            "collections": [b.source for b in mat.bindings],
            "written": int(c["written"]),
            "batches": int(c["batches"]),
            "stale_skipped": int(c["stale"]),
            "errors": int(c["errors"]),
            "errors_by_reason": {k: int(v) for k, v in sorted(c["errors_by_reason"].items())},
            "lag_p50_s": p50,
            "lag_p99_s": p99,
            "lag_mean_s": round(c["lag_sum"] / c["lag_count"], 3) if c["lag_count"] else None,
            "lag_p99_window_s": lag_quantiles(w)[1] if w else None,
            "queue": materialize_queue(settings, name),
            "queue_bulk": materialize_queue(settings, name, "bulk"),
            "waiting": int(waiting.get(name, 0)) if snap else None,
            "waiting_bytes": (int(sizes.get(name, 0)) if snap.measured_bytes else None) if snap else None,
            "waiting_documents": (int(documents.get(name, 0)) if snap.measured_bytes else None) if snap else None,
            "dead_letters": dead.get(("materialize", name), 0) if dead is not None else None,
            "last_written": _iso(last),
            "last_written_age_s": round(now - last, 1) if last else None,
        })

    flows: list[dict[str, Any]] = []
    by_collection = _collection_counts(counters)
    for row in spec.rows():
        entry = dict(row)
        name = row["name"]
        if row["type"] == "collection":
            cc = by_collection.get(name, {})
            entry.update(accepted=int(cc.get("events_accepted", 0)), validated=int(cc.get("documents_validated", 0)),
                         test_deliveries=int(cc.get("test_deliveries", 0)),
                         dead_letters=dead.get(("validate", ""), 0) if dead is not None else None)
        elif row["type"] == "derivation":
            entry.update(derived=int(by_collection.get(name, {}).get("documents_derived", 0)),
                         dead_letters=dead.get(("derive", ""), 0) if dead is not None else None)
        elif row["type"] == "materialization":
            t = next(t for t in targets if t["target"] == name)
            entry.update(written=t["written"], errors=t["errors"], lag_p99_s=t["lag_p99_s"])
        flows.append(entry)

    queues_detail = []
    if snap:
        for q in snap.queues.values():
            queues_detail.append({"queue": q.name, "target": q.target, "lane": q.lane, "ready": int(q.ready),
                                  "reserved": None if q.reserved is None else int(q.reserved),
                                  "bytes": None if q.ready_bytes is None else int((q.ready_bytes or 0)
                                                                                  + (q.reserved_bytes or 0))})
    try:
        alerts = firing_alerts(stats.client)
    except Exception:
        alerts = []
    workers = _workers(settings, spec, stats, errors, now)
    try:
        paused = paused_bindings(stats.client, now)
    except Exception as exc:  # the counters' Redis
        paused = []
        errors.append(f"paused bindings unreadable: {exc}")
    for t in targets:
        t["paused"] = sorted(e["collection"] for e in paused if e.get("target") == t["target"])
    return {
        "flow": str(spec.path),
        "generated_at": _iso(now),
        "flows": flows,
        "targets": targets,
        "queues": snap.lengths() if snap else {},
        "queues_detail": queues_detail,
        "dead_letters": sum(dead.values()) if dead is not None else None,
        "dead_letters_by_stage": _by_stage(dead) if dead is not None else None,
        "throughput": throughput,
        "window_seconds": config_window,
        "alerts_firing": alerts,
        "workers": workers,
        "paused": [{"target": e.get("target"), "collection": e.get("collection"), "since": _iso(e.get("since")),
                    "paused_s": round(now - float(e.get("since", now)), 1), "reason": e.get("reason")}
                   for e in paused],
        "errors": errors,
    }


def _workers(settings: Settings, spec: FlowSpec, stats: Stats, errors: list[str], now: float) -> dict[str, Any]:
    """Live worker nodes (heartbeats) and the readiness verdict /readyz gives about them."""
    from sophia_tasks.observe.workers import worker_readiness

    try:
        verdict = worker_readiness(settings, spec, stats.client, now)
    except Exception as exc:  # the broker is down: reported above
        errors.append(f"workers unknown: {exc}")
        return {"live": None, "ready": None, "reason": None, "ready_worker_seconds": settings.ready_worker_seconds}
    return {"live": verdict.workers, "ready": verdict.ok, "reason": verdict.reason,
            "ready_worker_seconds": settings.ready_worker_seconds}


def _collection_counts(counters: Mapping[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for raw, value in counters.items():
        name, labels = parse_field(raw)
        coll = labels.get("collection")
        if coll and name in ("events_accepted", "documents_validated", "documents_derived", "test_deliveries"):
            d = out.setdefault(coll, {})
            d[name] = d.get(name, 0.0) + value
    return out


def _by_stage(dead: Mapping[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (stage, _target), n in dead.items():
        out[stage] = out.get(stage, 0) + n
    return out


# -- rendering -------------------------------------------------------------------------
def _human_bytes(n: Any) -> str:
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _seconds(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    if v < 1:
        return f"{v * 1000:.0f} ms"
    if v < 120:
        return f"{v:.1f} s"
    if v < 7200:
        return f"{v / 60:.1f} min"
    return f"{v / 3600:.1f} h"


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


def render_status(report: Mapping[str, Any], out: IO[str] | None = None) -> None:
    """Readable tables. Not a terminal (a pipe, a log, CI): wide enough that no column is cut."""
    from rich.console import Console
    from rich.table import Table

    stream = out or sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    console = Console(file=stream, width=None if tty else 220, soft_wrap=False, highlight=False,
                      force_terminal=False if not tty else None)

    flows = Table(title=f"flows in {report['flow']}", title_justify="left")
    for col in ("name", "type", "reads from", "writes to", "activity"):
        flows.add_column(col, no_wrap=True)
    for f in report["flows"]:
        if f["type"] == "collection":
            activity = (f"accepted {f['accepted']}, validated {f['validated']}, test {f['test_deliveries']}, "
                        f"dead letters {_cell(f['dead_letters'])}")
        elif f["type"] == "derivation":
            activity = f"derived {f['derived']}, dead letters {_cell(f['dead_letters'])}"
        elif f["type"] == "materialization":
            activity = f"written {f['written']}, errors {f['errors']}, lag p99 {_seconds(f['lag_p99_s'])}"
        else:  # a route: where an envelope type goes
            activity = f.get("detail", "")
        # One line per source and target: a materialization with several bindings stays narrow.
        flows.add_row(f["name"], f["type"], "\n".join(f["reads_from"]), "\n".join(f["writes_to"]), activity)
    console.print(flows)

    window = report.get("window_seconds")
    targets = Table(title="targets (lag: webhook receipt to materialized)", title_justify="left")
    cols = ["target", "endpoint", "written", "batches", "errors", "lag p50", "lag p99",
            f"lag p99 {_seconds(window)}" if window else "lag p99 window", "waiting", "waiting docs",
            "waiting bytes", "dead letters", "last written"]
    for col in cols:
        targets.add_column(col, no_wrap=True, justify="right" if col not in ("target", "endpoint") else "left")
    for t in report["targets"]:
        errors = str(t["errors"])
        if t["errors_by_reason"]:
            errors += " (" + ", ".join(f"{k} {v}" for k, v in t["errors_by_reason"].items() if v) + ")"
        age = t.get("last_written_age_s")
        targets.add_row(t["target"], t["endpoint"], str(t["written"]), str(t["batches"]), errors,
                        _seconds(t["lag_p50_s"]), _seconds(t["lag_p99_s"]), _seconds(t["lag_p99_window_s"]),
                        _cell(t["waiting"]), _cell(t.get("waiting_documents")), _human_bytes(t["waiting_bytes"]),
                        _cell(t["dead_letters"]),
                        f"{_seconds(age)} ago" if age is not None else "never")
    console.print(targets)

    queues = Table(title="queues", title_justify="left")
    for col in ("queue", "lane", "target", "ready", "reserved", "bytes"):
        queues.add_column(col, no_wrap=True)
    for q in sorted(report["queues_detail"], key=lambda q: q["queue"]):
        queues.add_row(q["queue"], q["lane"], q["target"] or "", str(q["ready"]), _cell(q["reserved"]),
                       _human_bytes(q["bytes"]))
    console.print(queues)

    tp = ", ".join(f"{k} {v:g}/s" for k, v in report["throughput"].items())
    console.print(f"throughput (60 s window): {tp}")
    by_stage = report.get("dead_letters_by_stage") or {}
    console.print(f"dead letters pending: {_cell(report['dead_letters'])}"
                  + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(by_stage.items())) + ")" if by_stage else ""))
    workers = report.get("workers") or {}
    live = workers.get("live")
    if live is not None:
        names = ", ".join(f"{w['node']} (consumed {_seconds(w['consumed_age_s'])} ago, {w['active']}/"
                          f"{w['concurrency']} busy)" if w["consumed_age_s"] is not None else w["node"] for w in live)
        console.print(f"workers live: {len(live)}" + (f": {names}" if names else ""))
        if workers.get("reason"):
            console.print(f"workers NOT READY: {workers['reason']}")
    paused = report.get("paused") or []
    console.print("paused bindings: " + ("none" if not paused else f"{len(paused)} (documents held until "
                                         "`sophia-tasks flows apply`)"))
    for e in paused:
        console.print(f"  PAUSED {e['target']} <- {e['collection']} for {_seconds(e.get('paused_s'))}: {e['reason']}")
    firing = report.get("alerts_firing") or []
    console.print("alerts firing: " + (", ".join(f"{a['kind']} on {a['target']}" for a in firing) or "none"))
    for err in report.get("errors") or []:
        console.print(f"warning: {err}")
