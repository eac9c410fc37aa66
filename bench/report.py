"""Machine info, the targets table (PASS/FAIL per line) and the JSON results file."""
from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from sophia_tasks.dev.stack import ROOT

PACKAGES = ("celery", "kombu", "redis", "flask", "gunicorn", "psycopg2-binary", "snowflake-connector-python",
            "fakesnow", "duckdb", "orjson", "marshmallow", "psutil", "py-spy", "sophia-tasks")


def _git_commit() -> str | None:
    """Read .git directly (the harness runs no git commands)."""
    try:
        head = (ROOT / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            path = ROOT / ".git" / ref
            if path.exists():
                return path.read_text().strip()
            packed = ROOT / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.exists() else []:
                if line.endswith(" " + ref):
                    return line.split()[0]
            return None
        return head
    except OSError:
        return None


def machine_info(bench: Any) -> dict[str, Any]:
    import psutil

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git_commit(),
    }
    try:
        info["redis_server"] = bench.cache.info("server").get("redis_version")
    except Exception:
        pass
    try:
        with bench.pg().cursor() as cur:
            cur.execute("SHOW server_version")
            info["postgres_server"] = cur.fetchone()[0]
    except Exception:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


# -- targets ----------------------------------------------------------------------------------
def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _fmt(v: Any, unit: str = "", digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        text = f"{v:,.{digits}f}"
    else:
        text = str(v)
    return f"{text}{unit}"


def target_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure with its target from the issue; status PASS / FAIL / n/a / info."""
    rows: list[dict[str, Any]] = []

    def row(name: str, value: str, target: str, ok: bool | None, note: str = "") -> None:
        status = "info" if target == "" else ("n/a" if ok is None else ("PASS" if ok else "FAIL"))
        rows.append({"figure": name, "value": value, "target": target, "status": status, "note": note})

    def not_run(name: str, target: str, scenario: str) -> None:
        res = s.get(scenario)
        note = "not run" if res is None else f"error: {res.get('error', '')}"[:200]
        rows.append({"figure": name, "value": "-", "target": target, "status": "n/a", "note": note})

    ing = s.get("ingest") or {}
    ratio = ing.get("peak_ratio")
    if ratio is None:
        not_run("ingest: webhook vs floor app (peak accepted req/s)", ">= 0.8x floor", "ingest")
    else:
        row("ingest: webhook vs floor app (peak accepted req/s)",
            f"{_fmt(ing.get('peak_ours_per_s'))} / {_fmt(ing.get('peak_floor_per_s'))} = {_fmt(ratio, digits=2)}x",
            ">= 0.8x floor", ratio >= 0.8)
    for step in ing.get("steps") or []:
        row(f"  ingest at concurrency {step['concurrency']}",
            f"{_fmt(step['ours']['accepted_per_s'])}/s p50 {_fmt(step['ours']['p50_ms'], ' ms', 1)} "
            f"p99 {_fmt(step['ours']['p99_ms'], ' ms', 1)} | floor {_fmt(step['floor']['accepted_per_s'])}/s "
            f"p99 {_fmt(step['floor']['p99_ms'], ' ms', 1)} | {_fmt(step['ratio_to_floor'], 'x', 2)}", "", None)
    if ing.get("median_cpu_ratio") is not None:
        per = [(st["floor"].get("server_cpu_ms_per_accepted"), st["ours"].get("server_cpu_ms_per_accepted"))
               for st in ing.get("steps") or []]
        row("ingest: server CPU per request, floor / ours (median of steps)",
            f"{_fmt(ing['median_cpu_ratio'], 'x', 2)}",
            "", None, "ms per request, floor vs ours, by step: " + ", ".join(
                f"{_fmt(f, '', 3)} vs {_fmt(o, '', 3)}" for f, o in per) + "; web or floor tree + redis-server")

    dr = s.get("drain") or {}
    nv = s.get("naive") or {}
    sk = s.get("soak")
    if sk is not None and "accepted" in sk:
        lost = sum((sk.get("lost") or {}).values())
        dup = sum((sk.get("duplicated") or {}).values())
        row(f"soak: {_fmt(sk['rate'])} ev/s for {_fmt(sk['seconds'])} s, worker killed every "
            f"{_fmt(sk['kill_every_s'])} s: lost / duplicated", f"{lost} / {dup} of {_fmt(sk['accepted'])}",
            "0 / 0", lost == 0 and dup == 0 and len(sk.get("kills") or []) > 0,
            f"{len(sk.get('kills') or [])} kills; dead letters {sk.get('dead_letters')}; drained "
            f"{sk.get('drained_s_after_load')} s after the load")
        first, last = sk.get("memory_first_minute_peak") or {}, sk.get("memory_last_minute_peak") or {}
        if first.get("worker_mb") and last.get("worker_mb"):
            growth = last["worker_mb"] / first["worker_mb"]
            row("soak: worker tree RSS, last minute vs first minute (peak)",
                f"{_fmt(last['worker_mb'])} / {_fmt(first['worker_mb'])} MB = {_fmt(growth, 'x', 2)}",
                "flat (<= 1.2x)", growth <= 1.2,
                f"largest process {_fmt(first.get('worker_max_mb'))} -> {_fmt(last.get('worker_max_mb'))} MB")
    elif sk is not None:
        not_run("soak: lost / duplicated", "0 / 0", "soak")
    for t, label in (("redis", "Redis"), ("postgres", "Postgres")):
        rate = _get(dr, "targets", t, "events_per_s")
        if rate is None:
            not_run(f"drain -> {label} (events/s)", ">= 5,000", "drain")
            continue
        complete = _get(dr, "targets", t, "complete")
        row(f"drain -> {label} (events/s)", _fmt(rate), ">= 5,000",
            None if rate is None else (bool(complete) and rate >= 5000),
            "" if complete or rate is None else "did not complete")
    for t, label in (("redis", "Redis"), ("postgres", "Postgres")):
        ours, base = _get(dr, "targets", t, "events_per_s"), _get(nv, "targets", t, "events_per_s")
        r = ours / base if ours and base else None
        if r is None:
            not_run(f"drain -> {label} vs naive baseline", ">= 40x naive", "naive" if ours else "drain")
            continue
        row(f"drain -> {label} vs naive baseline", f"{_fmt(ours)} / {_fmt(base, digits=1)} = {_fmt(r, 'x', 1)}"
            if r else "-", ">= 40x naive", None if r is None else r >= 40)
    sf = _get(dr, "targets", "snowflake", "events_per_s")
    raw = _get(dr, "snowflake_raw", "raw_rate_per_s")
    r = sf / raw if sf and raw else None
    if r is None:
        not_run("drain -> Snowflake vs emulator raw insert rate", ">= 0.8x raw", "drain")
    else:
        row("drain -> Snowflake vs emulator raw insert rate", f"{_fmt(sf)} / {_fmt(raw)} = {_fmt(r, 'x', 2)}",
            ">= 0.8x raw", r >= 0.8,
            f"materializer alone: {_fmt(_get(dr, 'snowflake_raw', 'materializer_direct', 'rows_per_s'))}/s; "
            f"executemany: {_fmt(_get(dr, 'snowflake_raw', 'executemany', 'rows_per_s'))}/s")
    if nv:
        row("naive baseline (events/s: Redis / Postgres / Snowflake)",
            " / ".join(_fmt(_get(nv, "targets", t, "events_per_s"), digits=1) for t in ("redis", "postgres",
                                                                                       "snowflake")),
            "", None, f"N = {nv.get('events')}")

    lat = s.get("latency") or {}
    achieved = lat.get("achieved_rate")
    errors = _get(lat, "webhook", "errors") or 0
    for t, label, limit in (("redis", "Redis", 1.0), ("postgres", "Postgres", 2.0)):
        p99 = _get(lat, "lag_histogram", t, "p99_s")
        if p99 is None:
            not_run(f"latency p99 receipt -> {label} at 500 ev/s", f"< {limit:g} s", "latency")
            continue
        share = _get(lat, "lag_histogram", t, "share_within_s", str(limit))
        sampled = _get(lat, "lag_sampled", t, "p99_s")
        ok = None
        materialized = _get(lat, "materialized", t) or 0
        accepted = _get(lat, "webhook", "accepted") or 0
        if share is not None:
            ok = (share >= 0.99 and (achieved or 0) >= 0.95 * (lat.get("rate") or 0) and not errors
                  and materialized >= accepted)
        row(f"latency p99 receipt -> {label} at {_fmt(lat.get('rate'))} ev/s",
            f"{_fmt(p99, ' s', 3)} ({_fmt(100 * share if share is not None else None, '%', 2)} within {limit:g} s)"
            if p99 is not None else "-", f"< {limit:g} s", ok,
            f"histogram; harness-sampled p99 {_fmt(sampled, ' s', 3)}; offered {_fmt(achieved, '/s', 1)}; "
            f"materialized {materialized:,} of {accepted:,} accepted")
    if lat:
        row("latency p99 receipt -> Snowflake", _fmt(_get(lat, "lag_histogram", "snowflake", "p99_s"), " s", 3), "",
            None)
        row("webhook response at steady load (p50 / p99)",
            f"{_fmt(_get(lat, 'webhook', 'p50_ms'), ' ms', 1)} / {_fmt(_get(lat, 'webhook', 'p99_ms'), ' ms', 1)}",
            "", None)

    bf = s.get("backfill") or {}
    if bf.get("unavailable"):
        row("backfill", "unavailable", "", None, bf["unavailable"])
    elif bf:
        row("backfill (events/s: Redis / Postgres / Snowflake)",
            " / ".join(_fmt(_get(bf, "targets", t, "events_per_s")) for t in ("redis", "postgres", "snowflake")),
            "", None, f"N = {bf.get('events')}, command exit {_get(bf, 'command', 'exit_code')}")
        row("webhook p99 during backfill", _fmt(_get(bf, "live_webhook", "p99_ms"), " ms", 1), "", None,
            f"{_fmt(_get(bf, 'live_webhook', 'accepted'))} live events accepted, "
            f"{_fmt(_get(bf, 'live_webhook', 'errors'))} errors")
        # "Live p99 held while a backfill runs": the latency scenario's limits, on the sampled live events.
        # An event never seen (missing) waited longer than the sampler's patience: not held.
        for t, label, limit in (("redis", "Redis", 1.0), ("postgres", "Postgres", 2.0)):
            lag = _get(bf, "live_lag_sampled", t) or {}
            p99, missing, samples = lag.get("p99_s"), lag.get("missing") or 0, lag.get("samples") or 0
            ok = None if p99 is None else (p99 < limit and not missing and samples > 0)
            row(f"live lag p99 -> {label} during backfill", _fmt(p99, " s", 3), f"< {limit:g} s", ok,
                f"sampled: {samples:,} live events, {missing:,} never seen")

    worker_max, web_max, where = 0.0, 0.0, ""
    for name, res in s.items():
        mem = res.get("memory") if isinstance(res, dict) else None
        for role, m in (mem or {}).items():
            if role in ("worker",) and m["peak_process_rss_mb"] > worker_max:
                worker_max, where = m["peak_process_rss_mb"], name
            if role == "web":
                web_max = max(web_max, m["peak_tree_rss_mb"])
    if not worker_max:
        not_run("worker RSS, largest single process (peak)", "< 300 MB", "drain")
    else:
        row("worker RSS, largest single process (peak)", _fmt(worker_max, " MB", 1), "< 300 MB", worker_max < 300,
            f"in {where}")
        tree = max((_get(res, "memory", "worker", "peak_tree_rss_mb") or 0) for res in s.values()
                   if isinstance(res, dict))
        row("worker process tree RSS (peak, summed)", _fmt(tree, " MB", 1), "", None)
    if web_max:
        row("web process tree RSS (peak, summed)", _fmt(web_max, " MB", 1), "", None)
    for name, res in s.items():
        mem = res.get("memory") if isinstance(res, dict) else None
        cpu = {role: m["cpu_s"] for role, m in (mem or {}).items() if m.get("cpu_s")}
        if cpu:
            row(f"CPU seconds by process, {name}", ", ".join(f"{r} {v:g}" for r, v in
                                                             sorted(cpu.items(), key=lambda kv: -kv[1])), "", None)
    speeds = {name: res["calibration_ms_before_after"] for name, res in s.items()
              if isinstance(res, dict) and res.get("calibration_ms_before_after")}
    if speeds:
        row("machine speed: a fixed Python loop, ms before/after each scenario (lower is faster)",
            ", ".join(f"{name} {a:g}/{b:g}" for name, (a, b) in speeds.items()), "", None,
            "the CPU figures of runs compare only at similar speeds (bench.harness.calibrate)")
    return rows


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("figure", "value", "target", "status", "note"):
        table.add_column(col, overflow="fold")
    colour = {"PASS": "green", "FAIL": "red", "n/a": "yellow", "info": "dim"}
    for r in rows:
        table.add_row(r["figure"], r["value"], r["target"], f"[{colour[r['status']]}]{r['status']}[/]", r["note"])
    Console(width=max(140, Console().width)).print(table)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
