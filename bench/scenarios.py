"""The benchmark scenarios. Each takes the running ``Bench`` and returns a JSON-able dict.

ingest   webhook accept rate at increasing concurrency, beside the floor app (same gunicorn settings)
drain    N accepted events sitting on the broker, then a worker starts: time until all are in each target;
         plus the Snowflake emulator's own raw insert rate, measured in the same run
naive    the one-chain-per-event / one-row-per-write baseline (bench/naive.py) on its own worker
latency  steady open-loop webhook load; receipt-to-materialized quantiles per target
backfill ``sophia-tasks backfill --file`` of N calls with a steady live webhook load beside it
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

from bench import loadgen
from bench.calls import Calls
from bench.harness import OUR_PG_TABLE, OUR_PREFIX, OUR_SF_TABLE, Bench, tree_rss_mb
from sophia_tasks.dev.stack import BIN

WEBHOOK = "/estuary/webhook"
COUNTERS = "sophia:stats:counters"
TARGETS = ("redis", "postgres", "snowflake")
DERIVED = "gong_calls_enriched"


@dataclass
class Sizes:
    ingest_concurrency: tuple[int, ...]
    ingest_seconds: float
    ingest_warmup: float
    drain_events: int
    naive_events: int
    sf_raw_events: int
    latency_rate: float
    latency_seconds: float
    backfill_events: int
    backfill_rate: float
    batch_body_events: int = 100
    soak_rate: float = 500
    soak_seconds: float = 600
    soak_kill_every: float = 60
    soak_visibility_timeout: int = 30

    @classmethod
    def for_mode(cls, quick: bool) -> "Sizes":
        if quick:
            return cls(ingest_concurrency=(8, 32, 64), ingest_seconds=4, ingest_warmup=1, drain_events=2_000,
                       naive_events=300, sf_raw_events=2_000, latency_rate=500, latency_seconds=10,
                       backfill_events=5_000, backfill_rate=100)
        return cls(ingest_concurrency=(8, 32, 64), ingest_seconds=15, ingest_warmup=3, drain_events=20_000,
                   naive_events=2_000, sf_raw_events=5_000, latency_rate=500, latency_seconds=60,
                   backfill_events=100_000, backfill_rate=100)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def worker_name(bench: Bench) -> str:
    return [n for n in bench.stack.processes if n.startswith("worker-")][-1]


def headers(bench: Bench) -> dict[str, str]:
    return {"Authorization": f"Bearer {bench.token}", "Content-Type": "application/json"}


def purge_broker(bench: Bench) -> None:
    """Drop queued messages (lists) and unacked bookkeeping; keep kombu's exchange bindings."""
    for key in list(bench.broker.scan_iter(count=1000)):
        k = key.decode(errors="replace")
        if k.startswith("_kombu.binding"):
            continue
        # sophia:queued:* is the broker guard's record of published messages: purged with them, or its
        # sweep would put the purged messages back as lost deliveries.
        # The ingest buffer's bookkeeping (arrival stamp, pending cuts) goes with its events.
        if bench.broker.type(key) == b"list" or k.startswith(("unacked", "sophia:queued", "sophia:ingest-buffer",
                                                                "sophia:events", "sophia:batch")):
            bench.broker.delete(key)


def written_fields() -> dict[str, str]:
    from sophia_tasks.observe.stats import field

    return {t: field("documents_written", {"target": t, "collection": DERIVED}) for t in TARGETS}


def counters(bench: Bench) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in bench.cache.hgetall(COUNTERS).items()}


# -- 1. ingest -------------------------------------------------------------------------------
def ingest(bench: Bench, calls: Calls, sizes: Sizes, profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """Closed-loop single-event POSTs at each concurrency, floor app then ours, same bodies.

    The worker is stopped so the web tier is measured alone (on 2 cores a draining worker
    would take CPU from gunicorn, and the floor has no such neighbour); what is accepted
    stays on the broker and is purged afterwards.
    """
    bench.stop_role("worker")
    bench.start_web()
    bench.start_floor()
    h = headers(bench)

    def body() -> tuple[bytes, Any]:
        raw, eid, cid = calls.single_body()
        return raw, cid

    steps = []
    bench.rss.reset()
    for c in sizes.ingest_concurrency:
        log(f"ingest: concurrency {c}, floor app, {sizes.ingest_seconds:g}s")
        floor = asyncio.run(loadgen.closed_loop(bench.floor_url + "/floor", h, body, c, sizes.ingest_seconds,
                                                sizes.ingest_warmup, bench.server_cpu("floor"))).summary()
        log(f"ingest: concurrency {c}, webhook, {sizes.ingest_seconds:g}s")
        ours = asyncio.run(loadgen.closed_loop(bench.url + WEBHOOK, h, body, c, sizes.ingest_seconds,
                                               sizes.ingest_warmup, bench.server_cpu("web"))).summary()
        ratio = (ours["accepted_per_s"] / floor["accepted_per_s"]) if floor["accepted_per_s"] else None
        cpu_ratio = cpu_per_request_ratio(floor, ours)
        steps.append({"concurrency": c, "floor": floor, "ours": ours,
                      "ratio_to_floor": round(ratio, 3) if ratio is not None else None,
                      "cpu_ratio_to_floor": cpu_ratio})
        log(f"ingest: c={c} floor {floor['accepted_per_s']}/s p99 {floor['p99_ms']} ms | ours "
            f"{ours['accepted_per_s']}/s p99 {ours['p99_ms']} ms | ratio {steps[-1]['ratio_to_floor']} | "
            f"server CPU per request: floor {floor.get('server_cpu_ms_per_accepted')} ms, ours "
            f"{ours.get('server_cpu_ms_per_accepted')} ms (floor/ours {cpu_ratio})")
    memory = bench.rss.snapshot()
    bench.stop("floor")
    web_profile = None
    if profile is not None:
        web_profile = profile_web(bench, body, profile)
    on_broker = bench.queue_length("sophia.ingest")
    purge_broker(bench)
    bench.cache.flushdb()  # dedupe ids
    best_floor = max(s["floor"]["accepted_per_s"] or 0 for s in steps)
    best_ours = max(s["ours"]["accepted_per_s"] or 0 for s in steps)
    cpu_ratios = sorted(r for s in steps if (r := s["cpu_ratio_to_floor"]) is not None)
    return {
        "method": "closed loop (bench.loadgen, asyncio), one envelope per POST with a fresh event id and call id, "
                  f"{sizes.ingest_seconds:g}s per step after {sizes.ingest_warmup:g}s warm-up; floor app and "
                  "webhook alternate at each step under the same gunicorn config; worker stopped",
        "gunicorn": {"workers": bench.web_workers, "threads": bench.web_threads},
        "mean_call_bytes": round(calls.mean_call_bytes),
        "steps": steps,
        "peak_floor_per_s": best_floor,
        "peak_ours_per_s": best_ours,
        "peak_ratio": round(best_ours / best_floor, 3) if best_floor else None,
        # Steadier than the rates, which move with how gunicorn's workers share the connections.
        "median_cpu_ratio": cpu_ratios[len(cpu_ratios) // 2] if cpu_ratios else None,
        "ingest_messages_left_on_broker": on_broker,
        "memory": memory,
        **({"profile": web_profile} if web_profile is not None else {}),
    }


def cpu_per_request_ratio(floor: dict[str, Any], ours: dict[str, Any]) -> float | None:
    """The floor's server CPU per accepted request over ours (1.0: ours costs what the floor does)."""
    f, o = floor.get("server_cpu_ms_per_accepted"), ours.get("server_cpu_ms_per_accepted")
    return round(f / o, 3) if f and o else None


def profile_web(bench: Bench, body: loadgen.BodyFn, opts: dict[str, Any], concurrency: int = 32) -> dict[str, Any]:
    """An extra, unmeasured ingest step with py-spy on the gunicorn tree."""
    if not py_spy_path():
        return {"error": "py-spy is not installed (pip install py-spy)"}
    seconds = float(opts.get("seconds", 20))
    log(f"profile: webhook at concurrency {concurrency} for {seconds:g}s under py-spy")
    procs, svg, raw = spy(bench, bench.stack.processes["web"].popen.pid, seconds, opts["dir"], opts["stem"])
    time.sleep(0.5)
    res = asyncio.run(loadgen.closed_loop(bench.url + WEBHOOK, headers(bench), body, concurrency, seconds - 1))
    spy_wait(procs, seconds)
    out: dict[str, Any] = {"concurrency": concurrency, "seconds": seconds, "svg": str(svg), "raw": str(raw),
                           "accepted_per_s_under_profiler": res.summary()["accepted_per_s"]}
    if raw.exists():
        out["summary"] = summarize_raw(raw, WEB_AREAS)
        out["raw"] = str(gzip_file(raw))
    return out


# -- 2. drain ----------------------------------------------------------------------------------
def load_broker(bench: Bench, calls: Calls, n: int, per_body: int,
                call_ids: list[str] | None = None) -> dict[str, Any]:
    """POST ``n`` events in bodies of ``per_body``; their call ids are appended to ``call_ids``."""
    bodies = []
    left = n
    while left > 0:
        k = min(per_body, left)
        body, cids = calls.batch_body(k)
        bodies.append(body)
        if call_ids is not None:
            call_ids.extend(cids)
        left -= k
    res = asyncio.run(loadgen.post_batches(bench.url + WEBHOOK, headers(bench), bodies, concurrency=4))
    summary = res.summary()
    if res.accepted != len(bodies):
        raise RuntimeError(f"loading the broker: {res.accepted} of {len(bodies)} bodies accepted: {summary}")
    return {"bodies": len(bodies), "events_per_body": per_body, "seconds": round(res.duration_s, 2),
            "events_per_s": round(n / res.duration_s, 1) if res.duration_s else None}


def next_count_in(counted: int, n: int, elapsed: float, floor: float = 0.25, cap: float = 5.0) -> float:
    """Seconds until the next count of a target's rows: a tenth of the time the rest should take at
    the rate so far, between ``floor`` and ``cap``.

    Why: counting in the targets (a Redis SCAN of the whole key space, ``count(*)`` in PostgreSQL and
    the emulator) is work on the same two cores as the stack. At 160,000 keys one SCAN took 0.15 s of
    Redis CPU, so counting every second spent a sixth of a core of the machine under test. Counts
    come quickly near the end (so the completion time stays within ``floor`` on a steady rate) and
    rarely while much is left; a burst that finishes early is seen at most ``cap`` late.
    """
    if counted <= 0 or elapsed <= 0:
        return 1.0
    if counted >= n:
        return floor
    remaining_s = (n - counted) * elapsed / counted
    return max(floor, min(cap, remaining_s / 10))


def wait_targets(bench: Bench, n: int, t0: float, timeout: float, targets: tuple[str, ...] = TARGETS,
                 progress: Callable[[dict[str, int]], None] | None = None,
                 call_ids: list[str] | None = None) -> dict[str, Any]:
    """Times at which each target holds ``n`` documents of the pipeline.

    Progress is read every 20 ms from the pipeline's own ``documents_written`` counters (one
    HMGET; they are incremented right after each write). A target is done when counting in the
    target itself (``count_target``: in Redis EXISTS on ``call_ids`` when given, else a SCAN of the
    key prefix; SELECT count(*) in PostgreSQL; SELECT COUNT(*) through the Snowflake connector)
    finds ``n``: at once when its counter reaches ``n``, and otherwise on the schedule of
    ``next_count_in`` (in case a counter is lost).
    """
    fields = written_fields()
    base = {t: 0.0 for t in targets}
    done: dict[str, float] = {}
    counted: dict[str, int] = {t: 0 for t in targets}
    last_real = {t: t0 for t in targets}
    real_every = {t: 1.0 for t in targets}
    counter_hit: dict[str, float] = {}
    counts: dict[str, int] = {t: 0 for t in targets}
    deadline = t0 + timeout
    last_print = time.monotonic()
    while len(done) < len(targets) and time.monotonic() < deadline:
        now = time.monotonic()
        values = bench.cache.hmget(COUNTERS, [fields[t] for t in targets])
        for t, v in zip(targets, values, strict=True):
            if t not in counter_hit and v is not None and float(v) - base[t] >= n:
                counter_hit[t] = now
        for t in targets:
            if t in done:
                continue
            if now - last_real[t] >= real_every[t] or t in counter_hit:
                counted[t] = count_target(bench, t, call_ids=call_ids)
                counts[t] += 1
                last_real[t] = time.monotonic()
                real_every[t] = next_count_in(counted[t], n, last_real[t] - t0)
                if counted[t] >= n:
                    done[t] = min(counter_hit.get(t, last_real[t]), last_real[t])
        if progress is not None and now - last_print > 5:
            progress(dict(counted))
            last_print = now
        time.sleep(0.02)
    for t in targets:
        if t not in done:
            counted[t] = count_target(bench, t, call_ids=call_ids)
    return {"done_at": done, "counted": counted, "counts": counts,
            "counter_hit_at": {t: round(v - t0, 2) for t, v in counter_hit.items()}}


def log_size(bench: Bench) -> int:
    try:
        return bench.stack.processes[worker_name(bench)].log_path.stat().st_size
    except (IndexError, OSError):
        return 0


def task_stats(log_path: Path, offset: int = 0) -> dict[str, Any]:
    """Per task name: how many ran and their summed run time, from the worker's INFO log
    ("Task sophia.x[id] succeeded in 0.12s"). More materialize runs than 3 per derive mean
    retries or bulkhead step-asides (a re-published batch)."""
    import re

    pattern = re.compile(r"Task ([\w.]+)\[[^\]]+\] (succeeded in ([0-9.]+)s|retry|raised)")
    out: dict[str, dict[str, float]] = {}
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return {}
    for m in pattern.finditer(text):
        d = out.setdefault(m.group(1), {"succeeded": 0, "seconds": 0.0, "failed_or_retried": 0})
        if m.group(3):
            d["succeeded"] += 1
            d["seconds"] += float(m.group(3))
        else:
            d["failed_or_retried"] += 1
    for d in out.values():
        d["seconds"] = round(d["seconds"], 2)
    return out


def count_target(bench: Bench, target: str, ids: str = "", call_ids: list[str] | None = None) -> int:
    """Documents of the pipeline in ``target``: all, those whose call id starts with ``ids``, or, in
    Redis when the run knows them, those of ``call_ids`` (EXISTS on exactly those keys: a SCAN walks
    the whole key space, dedupe claims and live documents included, at 10-50 times the cost)."""
    try:
        if target == "redis":
            if call_ids is not None:
                return bench.redis_present(call_ids, OUR_PREFIX)
            return bench.redis_count(OUR_PREFIX, ids)
        if target == "postgres":
            return bench.pg_count(OUR_PG_TABLE, ids)
        return bench.sf_count(OUR_SF_TABLE, ids)
    except Exception as exc:  # a table not created yet by the first batch
        if "does not exist" in str(exc):
            return 0
        raise


def enriched_rows(calls: Calls, n: int) -> tuple[list[dict[str, Any]], Any]:
    """The documents the Snowflake binding would write, made by the project's own stage functions."""
    from sophia_tasks.flows import load_spec
    from sophia_tasks.pipeline import stages as pipeline
    from sophia_tasks.settings import load_settings

    spec = load_spec(load_settings().flow_path)
    validated = pipeline.validate_events(spec, calls.events(n)).documents["gong_calls"]
    derived = pipeline.derive_documents(spec, "gong_calls", validated).documents[DERIVED]
    return derived, spec


def sf_raw(bench: Bench, calls: Calls, n: int, batch: int) -> dict[str, Any]:
    """The emulator's own insert rate for the same rows, with no pipeline around it.

    * ``insert_json``: one ``INSERT ... SELECT FROM LATERAL FLATTEN(PARSE_JSON(?))`` per ``batch`` rows
      (the bound-JSON-array technique the materializer uses, minus the MERGE);
    * ``executemany``: single-row INSERTs through ``cursor.executemany`` (one batch, for scale);
    * ``materializer_direct``: the project's ``SnowflakeMaterializer.write_batch`` (the MERGE) called
      in this process on the same rows, no Celery: the ceiling of our Snowflake path.
    The raw rate the target compares with is ``insert_json``.
    """
    from sophia_tasks.core.documents import version_of
    from sophia_tasks.materializers.projection import keyed, project
    from sophia_tasks.materializers.snowflake import SnowflakeMaterializer
    from sophia_tasks.settings import load_settings

    docs, spec = enriched_rows(calls, n)
    binding = spec.materializations["snowflake"].bindings[0]
    pairs, _ = keyed(spec, binding, docs)
    rows = []
    for key, doc in pairs:
        row: dict[str, Any] = {"k": key, "d": doc, "p": version_of(doc)}
        for i, v in enumerate(project(doc, binding.projections)):
            row[f"x{i}"] = v
        rows.append(orjson.dumps(row))
    from sophia_tasks.materializers.snowflake import SF_TYPES, quote_ident

    cur = bench.sf().cursor()
    cols = [f"{quote_ident(binding.key_column)} VARCHAR NOT NULL PRIMARY KEY", '"FLOW_DOCUMENT" VARIANT',
            '"FLOW_PUBLISHED_AT" TIMESTAMP_TZ'] + [f"{quote_ident(p.column)} {SF_TYPES[p.type]}"
                                                    for p in binding.projections]
    cur.execute(f'CREATE TABLE IF NOT EXISTS "RAW_INSERT_BENCH" ({", ".join(cols)})')
    cur.execute('DELETE FROM "RAW_INSERT_BENCH"')
    names = [quote_ident(binding.key_column), '"FLOW_DOCUMENT"', '"FLOW_PUBLISHED_AT"'] + [
        quote_ident(p.column) for p in binding.projections]
    select = ["f.value:k::VARCHAR", "f.value:d", "f.value:p::TIMESTAMP_TZ"] + [
        f"f.value:x{i}" + ("" if p.type == "object" else f"::{SF_TYPES[p.type]}")
        for i, p in enumerate(binding.projections)]
    insert = (f'INSERT INTO "RAW_INSERT_BENCH" ({", ".join(names)}) SELECT {", ".join(select)} '
              "FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)) f")
    # Warm the emulator (first statements compile and load) before timing, then empty the table.
    cur.execute(insert, [(b"[" + b",".join(rows[:20]) + b"]").decode()])
    cur.execute('DELETE FROM "RAW_INSERT_BENCH"')
    t0 = time.monotonic()
    for i in range(0, len(rows), batch):
        cur.execute(insert, [(b"[" + b",".join(rows[i:i + batch]) + b"]").decode()])
    insert_s = time.monotonic() - t0
    cur.execute('SELECT COUNT(*) FROM "RAW_INSERT_BENCH"')
    inserted = int(cur.fetchone()[0])

    cur.execute('DELETE FROM "RAW_INSERT_BENCH"')
    many = min(len(pairs), batch)
    params = []
    for key, doc in pairs[:many]:
        params.append([key, orjson.dumps(doc).decode(), version_of(doc), *project(doc, binding.projections)])
    stmt = (f'INSERT INTO "RAW_INSERT_BENCH" ({", ".join(names)}) VALUES (?, PARSE_JSON(?), ?, '
            + ", ".join("?" for _ in binding.projections) + ")")
    t0 = time.monotonic()
    executemany: dict[str, Any]
    try:
        cur.executemany(stmt, params)
        em_s = time.monotonic() - t0
        executemany = {"rows": many, "seconds": round(em_s, 3), "rows_per_s": round(many / em_s, 1)}
    except Exception as exc:
        executemany = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    cur.execute('DELETE FROM "RAW_INSERT_BENCH"')

    # The project's materializer in-process, on the real table (emptied again afterwards).
    writer = SnowflakeMaterializer(load_settings(), spec)
    t0 = time.monotonic()
    written = 0
    for i in range(0, len(docs), batch):
        written += writer.write_batch(binding, docs[i:i + batch]).written
    direct_s = time.monotonic() - t0
    writer.close()
    bench.sf().cursor().execute(f'DELETE FROM "{OUR_SF_TABLE}"')
    return {
        "rows": len(rows), "batch": batch,
        "insert_json": {"rows": inserted, "seconds": round(insert_s, 3), "rows_per_s": round(len(rows) / insert_s, 1)},
        "executemany": executemany,
        "materializer_direct": {"rows": written, "seconds": round(direct_s, 3),
                                "rows_per_s": round(len(docs) / direct_s, 1)},
        "raw_rate_per_s": round(len(rows) / insert_s, 1),
    }


def drain(bench: Bench, calls: Calls, sizes: Sizes, profile: dict[str, Any] | None = None) -> dict[str, Any]:
    n = sizes.drain_events
    bench.stop_role("worker")
    bench.start_web()
    purge_broker(bench)
    bench.clear_targets()
    from sophia_tasks.settings import load_settings

    batch = load_settings().ingest_batch_size
    log(f"drain: measuring the emulator's raw insert rate on {sizes.sf_raw_events} rows")
    try:
        raw = sf_raw(bench, calls, sizes.sf_raw_events, batch)
    except Exception as exc:
        raw = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    log(f"drain: emulator raw {raw.get('raw_rate_per_s')} rows/s; loading {n} events through the webhook "
        f"({sizes.batch_body_events} per body) with the worker stopped")
    call_ids: list[str] = []
    loading = load_broker(bench, calls, n, sizes.batch_body_events, call_ids)
    queued = bench.queue_length("sophia.ingest")
    bench.rss.reset()
    log(f"drain: {queued} ingest messages on the broker; starting the worker")
    proc, t_spawn, t_ready = bench.start_worker()
    log(f"drain: worker ready after {t_ready - t_spawn:.2f}s; waiting for every target")
    timeout = max(120.0, n / 20)
    waited = wait_targets(bench, n, t_ready, timeout,
                          progress=lambda c: log(f"drain: progress {c}"), call_ids=call_ids)
    memory = bench.rss.snapshot()
    per_target: dict[str, Any] = {}
    for t in TARGETS:
        at = waited["done_at"].get(t)
        elapsed = (at - t_ready) if at else (time.monotonic() - t_ready)
        per_target[t] = {
            "complete": at is not None,
            "documents": waited["counted"][t],
            "seconds_from_ready": round(elapsed, 3),
            "events_per_s": round((n if at else waited["counted"][t]) / elapsed, 1) if elapsed > 0 else None,
            "events_per_s_incl_worker_start": round(n / (at - t_spawn), 1) if at else None,
        }
    log("drain: " + ", ".join(f"{t} {v['events_per_s']} ev/s" for t, v in per_target.items()))
    result = {
        "method": f"{n} events POSTed as JSON arrays of {sizes.batch_body_events} with the worker stopped, so they "
                  "sit on the broker as accepted events (in the ingest buffer on a Redis broker); "
                  "then one worker starts "
                  f"(--concurrency {bench.worker_concurrency}); each target's time runs from the worker's "
                  "'ready.' log line to the moment the target holds all N documents (pipeline counters read every "
                  "20 ms, confirmed by Redis EXISTS on the run's keys / SELECT count(*) / Snowflake SELECT COUNT(*))",
        "events": n,
        "loading": loading,
        "ingest_messages_queued": queued,
        "worker_start_s": round(t_ready - t_spawn, 3),
        "targets": per_target,
        "target_counts": waited["counts"],
        "counter_hit_at_s": waited["counter_hit_at"],
        "dead_letters": bench.dead_letters(),
        "worker_tasks": task_stats(proc.log_path),
        "snowflake_raw": raw,
        "memory": memory,
    }
    if profile is not None:
        result["profile"] = run_profile(bench, calls, sizes, per_target, profile)
    return result


# -- profile (py-spy) --------------------------------------------------------------------------
def py_spy_path() -> str | None:
    import shutil

    return str(BIN / "py-spy") if (BIN / "py-spy").exists() else shutil.which("py-spy")


def spy(bench: Bench, pid: int, seconds: float, out_dir: Path, stem: str) -> tuple[list[subprocess.Popen], Path, Path]:
    """Two py-spy recorders on one process tree (flame graph SVG + collapsed stacks), non-blocking
    sampling at 100 Hz so the profiled processes are not paused."""
    exe = py_spy_path()
    if not exe:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    svg, raw = out_dir / f"{stem}.svg", out_dir / f"{stem}.txt"
    common = ["--pid", str(pid), "--subprocesses", "--duration", str(int(seconds)), "--rate", "100", "--nonblocking"]
    logs = bench.stack.workdir
    procs = [subprocess.Popen([exe, "record", "-o", str(svg), "--format", "flamegraph", *common],
                              stdout=open(logs / f"{stem}-svg.log", "wb"), stderr=subprocess.STDOUT),
             subprocess.Popen([exe, "record", "-o", str(raw), "--format", "raw", *common],
                              stdout=open(logs / f"{stem}-raw.log", "wb"), stderr=subprocess.STDOUT)]
    return procs, svg, raw


def gzip_file(path: Path) -> Path:
    """py-spy's collapsed stacks are megabytes of text: keep them gzipped beside the SVG."""
    import gzip
    import shutil

    target = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return target


def spy_wait(procs: list[subprocess.Popen], seconds: float) -> None:
    for p in procs:
        try:
            p.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            p.terminate()


def run_profile(bench: Bench, calls: Calls, sizes: Sizes, measured: dict[str, Any],
                opts: dict[str, Any]) -> dict[str, Any]:
    """A second, unmeasured drain with py-spy sampling the worker's process tree."""
    if not py_spy_path():
        return {"error": "py-spy is not installed (pip install py-spy)"}
    seconds = float(opts.get("seconds", 20))
    rates = [v["events_per_s"] or 0 for v in measured.values()]
    slowest = min(r for r in rates if r) if any(rates) else 500.0
    n = int(min(50_000, max(sizes.drain_events, slowest * seconds)))
    bench.stop_role("worker")
    purge_broker(bench)
    bench.clear_targets()
    log(f"profile: loading {n} events, then py-spy on the worker tree for {seconds:g}s")
    call_ids: list[str] = []
    load_broker(bench, calls, n, sizes.batch_body_events, call_ids)
    proc, t_spawn, t_ready = bench.start_worker()
    procs, svg, raw = spy(bench, proc.popen.pid, seconds, opts["dir"], opts["stem"])
    spy_wait(procs, seconds)
    waited = wait_targets(bench, n, t_ready, max(60.0, n / 20), call_ids=call_ids)
    out: dict[str, Any] = {"events": n, "seconds": seconds, "svg": str(svg), "raw": str(raw),
                           "drained": {t: waited["counted"][t] for t in TARGETS}}
    if raw.exists():
        out["summary"] = summarize_raw(raw, WORKER_AREAS)
        out["raw"] = str(gzip_file(raw))
    else:
        out["error"] = (bench.stack.workdir / f"{opts['stem']}-raw.log").read_text(errors="replace")[-1000:]
    return out


# What the worker spends CPU on: (label, process role or None for both, substrings that must all be in the stack).
WORKER_AREAS: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    ("main: Celery strategy decodes every task body (only to test for protocol 1)", "main",
     ("task_message_handler", "Message.payload")),
    ("main: ingest batcher (decode ingest messages, publish validate)", "main", ("IngestBatcher",)),
    ("main: all of it (receive, route to the pool, ack, events)", "main", ("",)),
    ("child: decode task body (kombu JSON)", "child", ("fast_trace_task", "SerializerRegistry.loads")),
    ("child: receive job from main process (pickle)", "child", ("pickle_loads",)),
    ("child: sophia.validate", "child", ("validate (sophia_tasks/tasks.py",)),
    ("child:   marshmallow schema", "child", ("validate (sophia_tasks/tasks.py", "marshmallow/")),
    ("child: sophia.derive", "child", ("derive (sophia_tasks/tasks.py",)),
    ("child:   enrichment + PII transform", "child", ("derive (sophia_tasks/tasks.py", "sophia_tasks/derivations/")),
    ("child: sophia.materialize", "child", ("materialize (sophia_tasks/tasks.py",)),
    ("child:   redis write_batch", "child", ("RedisMaterializer.write_batch",)),
    ("child:   postgres write_batch", "child", ("PostgresMaterializer.write_batch",)),
    ("child:   snowflake write_batch", "child", ("SnowflakeMaterializer.write_batch",)),
    ("child:   record_written (lag histogram, counters)", "child", ("record_written",)),
    ("child:   journal (append_events)", "child", ("append_events (",)),
    ("child:   bulkhead slots (acquire/release)", "child", ("Bulkhead.",)),
    ("child: publish next stage (apply_async, JSON encode)", "child", ("Task.apply_async",)),
    ("child:   of which JSON encode", "child", ("Task.apply_async", "SerializerRegistry.dumps")),
    ("any: kombu/stdlib JSON (encode + decode)", None, ("SerializerRegistry.",)),
    ("any: Message.decode outside the serializer registry", None, ("Message.decode",)),
)

# What a gunicorn worker spends CPU on while answering webhook POSTs.
WEB_AREAS: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    ("gunicorn workers, all of it", "child", ("",)),
    ("webhook handler (receive)", "child", ("receive (web/webhook.py",)),
    ("  authenticate", "child", ("receive (web/webhook.py", "authenticate (web/auth.py")),
    ("  parse_body (envelope)", "child", ("receive (web/webhook.py", "parse_body (")),
    ("  make_event / normalize_version", "child", ("receive (web/webhook.py", "make_event (")),
    ("  dedupe claim (Redis SET NX)", "child", ("receive (web/webhook.py", "Services.claim (")),
    ("  publish (Celery send_task)", "child", ("receive (web/webhook.py", "Services.publish (")),
    ("    of which JSON encode", "child", ("Services.publish (", "SerializerRegistry.dumps")),
    ("  count_accepted (stats)", "child", ("receive (web/webhook.py", "Services.count_accepted (")),
    ("  jsonify (response)", "child", ("receive (web/webhook.py", "jsonify (")),
    ("Flask wsgi_app (includes the handler)", "child", ("wsgi_app (",)),
    ("gunicorn HTTP request parsing", "child", ("gunicorn/http/",)),
)


def summarize_raw(path: Path, areas_spec: tuple[tuple[str, str | None, tuple[str, ...]], ...],
                  top: int = 25) -> dict[str, Any]:
    """Shares of py-spy samples (collapsed stacks, active threads only): per process role (the
    main process vs its children), per area (``areas_spec``), and the functions with the most
    self and inclusive samples."""
    self_s: dict[str, int] = {}
    incl: dict[str, int] = {}
    roles: dict[str, int] = {}
    areas: dict[str, int] = {label: 0 for label, _, _ in areas_spec}
    total = 0
    if path.suffix == ".gz":
        import gzip

        text = gzip.decompress(path.read_bytes()).decode(errors="replace")
    else:
        text = path.read_text(errors="replace")
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = stack.split(";")
        total += k
        role = "child" if sum(1 for f in frames if f.startswith("process ")) > 1 else "main"
        roles[role] = roles.get(role, 0) + k
        for label, want_role, needles in areas_spec:
            if (want_role is None or want_role == role) and all(n in stack for n in needles):
                areas[label] += k
        code = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not code:
            continue
        self_s[code[-1]] = self_s.get(code[-1], 0) + k
        for f in set(code):
            incl[f] = incl.get(f, 0) + k

    def pct(d: dict[str, int], n: int | None = top) -> list[dict[str, Any]]:
        items = sorted(d.items(), key=lambda kv: -kv[1])
        return [{"function": f, "samples": c, "pct": round(100 * c / total, 1) if total else 0.0}
                for f, c in (items[:n] if n else items)]

    generic = ("celery/", "click/", "billiard/", "kombu/", "<module>", "threading.py")
    return {"samples": total,
            "by_role": pct({"main process": roles.get("main", 0), "children": roles.get("child", 0)}),
            "areas": [{"area": label, "samples": c, "pct": round(100 * c / total, 1) if total else 0.0}
                      for label, c in areas.items()],
            "self": pct(self_s),
            "inclusive": [r for r in pct(incl, None) if not any(g in r["function"] for g in generic)][:top]}


# -- 3. naive ---------------------------------------------------------------------------------
def naive(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    n = sizes.naive_events
    bench.stop_role("worker")
    bench.stop_role("naive")
    purge_broker(bench)
    bench.clear_targets()
    from bench import naive as naive_app

    naive_app.ensure_tables()
    events = calls.events(n)
    t0 = time.monotonic()
    for ev in events:
        naive_app.send(ev)
    publish_s = time.monotonic() - t0
    log(f"naive: {n} chains published in {publish_s:.1f}s; starting the naive worker")
    bench.rss.reset()
    proc, t_spawn, t_ready = bench.start_naive_worker()
    counters_ = {
        "redis": lambda: bench.redis_count(naive_app.REDIS_PREFIX),
        "postgres": lambda: bench.pg_count(naive_app.PG_TABLE),
        "snowflake": lambda: bench.sf_count(naive_app.SF_TABLE),
    }
    done: dict[str, float] = {}
    counted = {t: 0 for t in TARGETS}
    deadline = t_ready + max(180.0, n / 5)
    last_print = last_change = time.monotonic()
    seen = dict(counted)
    while len(done) < 3 and time.monotonic() < deadline:
        if counted != seen:
            seen, last_change = dict(counted), time.monotonic()
        elif time.monotonic() - last_change > 60:
            log(f"naive: no progress for 60 s, giving up (see {bench.stack.workdir}/naive-*.log)")
            break
        for t in TARGETS:
            if t in done:
                continue
            try:
                counted[t] = counters_[t]()
            except Exception as exc:
                if "does not exist" not in str(exc):
                    raise
            if counted[t] >= n:
                done[t] = time.monotonic()
        if time.monotonic() - last_print > 5:
            log(f"naive: progress {counted}")
            last_print = time.monotonic()
        time.sleep(0.2)
    memory = bench.rss.snapshot()
    bench.stop_role("naive")
    per_target = {}
    for t in TARGETS:
        at = done.get(t)
        elapsed = (at - t_ready) if at else (time.monotonic() - t_ready)
        per_target[t] = {"complete": at is not None, "documents": counted[t], "seconds_from_ready": round(elapsed, 3),
                         "events_per_s": round((n if at else counted[t]) / elapsed, 1) if elapsed > 0 else None}
    log("naive: " + ", ".join(f"{t} {v['events_per_s']} ev/s" for t, v in per_target.items()))
    return {
        "method": f"{n} events, one Celery chain each (naive.validate -> naive.derive -> one write task per "
                  "target, one row per write), published straight to the broker with the naive worker "
                  f"stopped, then one worker (-A bench.naive, --concurrency {bench.worker_concurrency}) drains "
                  "them; timed from its 'ready.' line until each target holds N rows (polled every 0.2 s). "
                  "The rate is a steady-state per-event cost, so a smaller N than the pipeline drain's is "
                  "compared as a rate (events/s), not extrapolated to a total time",
        "events": n,
        "publish_s": round(publish_s, 2),
        "worker_start_s": round(t_ready - t_spawn, 3),
        "targets": per_target,
        "memory": memory,
    }


# -- 4. latency -------------------------------------------------------------------------------
class LagSampler:
    """Harness-side cross-check: every ``every``-th event is polled for in Redis and PostgreSQL
    (every 50 ms; every 250 ms while more than 100 are outstanding) from a thread of its own, with
    its own connections, from the first send until ``finish``; the first-seen time minus the
    scheduled send time is its lag (so it includes the HTTP request and up to one poll interval)."""

    def __init__(self, bench: Bench, every: int = 10) -> None:
        import psycopg2
        import redis

        self.every = every
        self.i = 0
        self.sent: dict[str, float] = {}
        self.pending: dict[str, set[str]] = {"redis": set(), "postgres": set()}
        # (seconds from the sampler's start to the event's send, lag) per target: lag over time.
        self.timeline: dict[str, list[tuple[float, float]]] = {"redis": [], "postgres": []}
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.cache = redis.Redis.from_url(bench.env["SOPHIA_REDIS_URL"])
        self.pg = psycopg2.connect(bench.env["SOPHIA_POSTGRES_DSN"])
        self.pg.autocommit = True
        self.thread = threading.Thread(target=self._loop, name="lag-sampler", daemon=True)

    def start(self) -> "LagSampler":
        self.thread.start()
        return self

    def on_sent(self, cid: str, scheduled: float) -> None:
        self.i += 1
        if self.i % self.every == 0:
            self.sent[cid] = scheduled

    def on_done(self, cid: str, status: int, _t: float) -> None:
        if cid in self.sent and status == 202:
            with self.lock:
                for t in self.pending:
                    self.pending[t].add(cid)

    def poll_once(self) -> None:
        now = time.monotonic()
        with self.lock:
            ids = list(self.pending["redis"])
            pg_ids = list(self.pending["postgres"])
        found_r: list[str] = []
        if ids:
            pipe = self.cache.pipeline(transaction=False)
            for cid in ids:
                pipe.exists(OUR_PREFIX + cid)
            found_r = [cid for cid, hit in zip(ids, pipe.execute(), strict=True) if hit]
        found_p: list[str] = []
        if pg_ids:
            try:
                with self.pg.cursor() as cur:
                    cur.execute(f"SELECT call_id FROM {OUR_PG_TABLE} WHERE call_id = ANY(%s)", (pg_ids,))
                    found_p = [r[0] for r in cur.fetchall()]
            except Exception:  # the table is created by the first batch
                found_p = []
        with self.lock:
            for t, found in (("redis", found_r), ("postgres", found_p)):
                for cid in found:
                    if cid in self.pending[t]:
                        self.pending[t].discard(cid)
                        self.timeline[t].append((self.sent[cid] - self.t0, now - self.sent[cid]))

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                self.poll_once()
            except Exception:
                pass
            with self.lock:
                backlog = max(len(p) for p in self.pending.values())
            self.stopped.wait(0.05 if backlog < 100 else 0.25)

    def finish(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not any(self.pending.values()):
                    break
            time.sleep(0.05)
        self.stopped.set()
        self.thread.join(5)
        self.pg.close()

    def summary(self, window_s: float = 30.0) -> dict[str, Any]:
        """Quantiles of every sampled lag, and per ``window_s`` of send time (when the lag grew)."""
        out = {}
        for t, timeline in self.timeline.items():
            lags = [lag for _, lag in timeline]
            out[t] = {"samples": len(lags), "missing": len(self.pending[t]),
                      "p50_s": _r3(loadgen.percentile(lags, 0.5)), "p95_s": _r3(loadgen.percentile(lags, 0.95)),
                      "p99_s": _r3(loadgen.percentile(lags, 0.99)), "max_s": _r3(max(lags) if lags else None),
                      "windows": lag_windows(timeline, window_s)}
        return out


def lag_windows(timeline: list[tuple[float, float]], window_s: float) -> list[dict[str, Any]]:
    """(send offset, lag) pairs as one row per window of send time: its start, count, p50, p99, max."""
    by_window: dict[int, list[float]] = {}
    for sent, lag in timeline:
        by_window.setdefault(int(sent // window_s), []).append(lag)
    return [{"from_s": round(w * window_s, 1), "n": len(lags), "p50_s": _r3(loadgen.percentile(lags, 0.5)),
             "p99_s": _r3(loadgen.percentile(lags, 0.99)), "max_s": _r3(max(lags))}
            for w, lags in sorted(by_window.items())]


def _r3(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def lag_histogram(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Quantiles of receipt-to-materialized lag per target from the pipeline's own histogram
    (``lag_seconds_bucket|le=..|target=..`` in the cache Redis), as after-minus-before deltas."""
    from sophia_tasks.observe.counts import quantile
    from sophia_tasks.observe.stats import LAG_BUCKETS, parse_field

    per: dict[str, dict[str, Any]] = {t: {"buckets": {}, "count": 0.0, "sum": 0.0} for t in TARGETS}
    for key in set(before) | set(after):
        name, labels = parse_field(key)
        t = labels.get("target")
        if t not in per:
            continue
        delta = after.get(key, 0.0) - before.get(key, 0.0)
        if name == "lag_seconds_bucket":
            per[t]["buckets"][float(labels["le"])] = delta
        elif name == "lag_seconds_count":
            per[t]["count"] = delta
        elif name == "lag_seconds_sum":
            per[t]["sum"] = delta
    out = {}
    for t, d in per.items():
        count = d["count"]
        buckets = [(le, d["buckets"].get(le, 0.0)) for le in LAG_BUCKETS]
        within = {str(le): round(c / count, 4) for le, c in buckets if le <= 5.0} if count else {}
        out[t] = {
            "count": int(count),
            "mean_s": round(d["sum"] / count, 3) if count else None,
            "p50_s": quantile(buckets, count, 0.50),
            "p95_s": quantile(buckets, count, 0.95),
            "p99_s": quantile(buckets, count, 0.99),
            "share_within_s": within,
        }
    return out


def latency(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    bench.start_web()
    if bench.pid_of("worker") is None:
        bench.start_worker()
    purge_broker(bench)
    bench.clear_targets()
    # Warm the worker's connections and the tables (first batch creates them) before measuring.
    warm = asyncio.run(loadgen.open_loop(bench.url + WEBHOOK, headers(bench),
                                         lambda: (calls.single_body()[0], None), 50, 2.0))
    wait_targets(bench, warm.accepted, time.monotonic(), 60)  # their lag stays out of the measurement
    time.sleep(0.5)
    before = counters(bench)
    log_offset = log_size(bench)
    fields = written_fields()
    sampler = LagSampler(bench).start()
    bench.rss.reset()

    def body() -> tuple[bytes, Any]:
        raw, _eid, cid = calls.single_body()
        return raw, cid

    log(f"latency: {sizes.latency_rate:g} ev/s for {sizes.latency_seconds:g}s (open loop)")
    res = asyncio.run(loadgen.open_loop(bench.url + WEBHOOK, headers(bench), body, sizes.latency_rate,
                                        sizes.latency_seconds, on_sent=sampler.on_sent, on_done=sampler.on_done))
    accepted = res.accepted
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = counters(bench)
        if all(now.get(fields[t], 0.0) - before.get(fields[t], 0.0) >= accepted for t in TARGETS):
            break
        time.sleep(0.2)
    sampler.finish()
    memory = bench.rss.snapshot()
    after = counters(bench)
    written = {t: int(after.get(fields[t], 0.0) - before.get(fields[t], 0.0)) for t in TARGETS}
    hist = lag_histogram(before, after)
    web = res.summary()
    log(f"latency: offered {web['sent']} accepted {accepted}; web p99 {web['p99_ms']} ms; lag p99 "
        + ", ".join(f"{t} {hist[t]['p99_s']}s" for t in TARGETS))
    return {
        "method": "open-loop webhook load (one event per POST, bench.loadgen on asyncio, "
                  "response time from the scheduled send "
                  "time); receipt-to-materialized lag per target from the pipeline's own lag histogram "
                  "(sophia:stats:counters lag_seconds_bucket deltas, received_at in _meta to the write, "
                  "quantiles interpolated inside buckets 0.05/0.1/0.25/0.5/1/2/5 s as status.quantile does; "
                  "share_within_s is exact at bucket bounds); cross-check: every 10th event polled for in "
                  "Redis and PostgreSQL from the harness every 50 ms (send to first seen, includes HTTP)",
        "rate": sizes.latency_rate,
        "seconds": sizes.latency_seconds,
        "webhook": web,
        "achieved_rate": round(res.sent / res.duration_s, 1) if res.duration_s else None,
        "materialized": written,
        "lag_histogram": hist,
        "lag_sampled": sampler.summary(),
        "dead_letters": bench.dead_letters(),
        "worker_tasks": task_stats(bench.stack.processes[worker_name(bench)].log_path, log_offset),
        "memory": memory,
    }


# -- 5. backfill ------------------------------------------------------------------------------
def backfill_available(bench: Bench) -> tuple[bool, str]:
    exe = BIN / "sophia-tasks"
    if not exe.exists():
        return False, f"{exe} not found"
    r = subprocess.run([str(exe), "backfill", "--help"], env=bench.stack.env, capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        return False, ("`sophia-tasks backfill` is not available: "
                       + (r.stderr or r.stdout).strip().splitlines()[-1:][0] if (r.stderr or r.stdout).strip()
                       else f"exit {r.returncode}")
    if "--file" not in r.stdout:
        return False, "`sophia-tasks backfill --help` does not mention --file"
    return True, ""


def backfill(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    ok, why = backfill_available(bench)
    if not ok:
        log(f"backfill: unavailable ({why})")
        return {"unavailable": why}
    n = sizes.backfill_events
    bench.start_web()
    if bench.pid_of("worker") is None:
        bench.start_worker()
    purge_broker(bench)
    bench.clear_targets()
    path = bench.workdir / f"backfill-{calls.run}.ndjson"
    call_ids: list[str] = []
    with open(path, "wb") as f:
        for call in calls.calls(n, ns="2"):
            call_ids.append(call["metaData"]["id"])
            f.write(orjson.dumps(call) + b"\n")
    prefix = calls.prefix("2")
    sampler = LagSampler(bench).start()
    state: dict[str, Any] = {"done": {}, "counted": {t: 0 for t in TARGETS}, "stop": False}
    cmd_log = open(bench.stack.workdir / "backfill-cmd.log", "wb")
    argv = [str(BIN / "sophia-tasks"), "backfill", "--file", str(path)]
    bench.rss.reset()
    log_offset = log_size(bench)
    t0 = time.monotonic()
    cmd = subprocess.Popen(argv, env=bench.stack.env, stdout=cmd_log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, cwd=str(bench.stack.workdir))
    timeout = max(300.0, n / 20)

    def monitor() -> None:
        last = 0.0
        due = {t: t0 + 1.0 for t in TARGETS}  # counting is work on the machine: see next_count_in
        while not state["stop"] and time.monotonic() - t0 < timeout:
            if cmd.poll() is not None and "cmd_s" not in state:
                state["cmd_s"] = time.monotonic() - t0
                state["rc"] = cmd.returncode
                if cmd.returncode != 0:
                    break
            for t in TARGETS:
                if t in state["done"] or time.monotonic() < due[t]:
                    continue
                try:
                    state["counted"][t] = count_target(bench, t, prefix, call_ids=call_ids)
                except Exception:
                    pass
                now = time.monotonic()
                if state["counted"][t] >= n:
                    state["done"][t] = now
                due[t] = now + next_count_in(state["counted"][t], n, now - t0)
            if len(state["done"]) == 3:
                break
            if time.monotonic() - last > 10:
                log(f"backfill: progress {state['counted']}")
                last = time.monotonic()
            time.sleep(0.1)
        state["stop"] = True

    mon = threading.Thread(target=monitor, daemon=True)
    mon.start()

    def body() -> tuple[bytes, Any]:
        raw, _eid, cid = calls.single_body()
        return raw, cid

    log(f"backfill: {n} calls from {path.name}, with {sizes.backfill_rate:g} ev/s of live webhook load beside it")
    live = asyncio.run(loadgen.open_loop(bench.url + WEBHOOK, headers(bench), body, sizes.backfill_rate, 0,
                                         on_sent=sampler.on_sent, on_done=sampler.on_done,
                                         stop=lambda: state["stop"]))
    mon.join()
    if cmd.poll() is None:
        try:
            cmd.wait(30)
        except subprocess.TimeoutExpired:
            cmd.terminate()
    state.setdefault("cmd_s", time.monotonic() - t0)
    state.setdefault("rc", cmd.returncode)
    cmd_log.close()
    sampler.finish(timeout=120)  # live events queued behind the backfill are still arriving
    memory = bench.rss.snapshot()
    per_target = {}
    for t in TARGETS:
        at = state["done"].get(t)
        elapsed = (at - t0) if at else (time.monotonic() - t0)
        per_target[t] = {"complete": at is not None, "documents": state["counted"][t],
                         "seconds": round(elapsed, 2),
                         "events_per_s": round((n if at else state["counted"][t]) / elapsed, 1) if elapsed else None}
    tail = (bench.stack.workdir / "backfill-cmd.log").read_text(errors="replace")[-800:]
    web = live.summary()
    log("backfill: " + ", ".join(f"{t} {v['events_per_s']} ev/s" for t, v in per_target.items())
        + f"; live webhook p99 {web['p99_ms']} ms")
    return {
        "method": f"`sophia-tasks backfill --file` of {n} calls (fresh ids, NDJSON of Gong calls) as a subprocess "
                  "with the stack's environment; each target's time runs from the command's start until it "
                  "holds all N backfilled calls (counted by call-id prefix, every 0.25-5 s by the time left: "
                  "next_count_in); live webhook load "
                  f"of {sizes.backfill_rate:g} ev/s (open loop) runs until then",
        "events": n,
        "command": {"exit_code": state["rc"], "seconds": round(state["cmd_s"], 2), "output_tail": tail},
        "targets": per_target,
        "live_webhook": web,
        "live_lag_sampled": sampler.summary(),
        "dead_letters": bench.dead_letters(),
        "worker_tasks": task_stats(bench.stack.processes[worker_name(bench)].log_path, log_offset),
        "memory": memory,
    }


SCENARIOS = ("ingest", "drain", "naive", "latency", "backfill")


# -- 6. soak (not in the default set: `python -m bench --scenario soak`) ----------------------
def _tree_rss(pid: int | None) -> tuple[float, float]:
    """(summed RSS, largest single process RSS) in MB of a process tree; (0, 0) if it is gone."""
    sizes = tree_rss_mb(pid)
    return sum(sizes), max(sizes, default=0.0)


def soak(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    """Steady webhook load with the worker SIGKILLed (whole process group) every ``soak_kill_every``
    seconds and a replacement started at once. Checks: every accepted event is in every target
    exactly once (rows = distinct keys = accepted), no dead letters, and memory flat (worker and
    web RSS sampled every 5 s; first against last minute)."""
    import signal as _signal

    vt = sizes.soak_visibility_timeout
    saved = {k: bench.stack.env.get(k) for k in ("SOPHIA_VISIBILITY_TIMEOUT", "SOPHIA_RETRY_BACKOFF_MAX")}
    # A killed worker's reserved messages come back after the visibility timeout: shortened here so
    # a 10-minute run sees them come back (production keeps 3600 s and waits that long).
    bench.stack.env.update({"SOPHIA_VISIBILITY_TIMEOUT": str(vt), "SOPHIA_RETRY_BACKOFF_MAX": str(max(1, vt // 4))})
    try:
        bench.stop_role("worker")
        bench.stop("web")
        bench.start_web()
        purge_broker(bench)
        bench.clear_targets()
        bench.start_worker()
        ns = "7"
        prefix = calls.prefix(ns)
        accepted: list[str] = []
        statuses: dict[int, int] = {}

        def body() -> tuple[bytes, Any]:
            eid, cid = calls.next_ids(ns)
            return calls.single[int(cid) % len(calls.single)].render(eid, cid), cid

        def on_done(tag: Any, status: int, _latency: float) -> None:
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                accepted.append(tag)

        box: dict[str, Any] = {}
        log(f"soak: {sizes.soak_rate:g} ev/s for {sizes.soak_seconds:g}s, worker SIGKILLed every "
            f"{sizes.soak_kill_every:g}s (visibility timeout {vt}s)")
        loader = threading.Thread(target=lambda: box.update(res=asyncio.run(loadgen.open_loop(
            bench.url + WEBHOOK, headers(bench), body, sizes.soak_rate, sizes.soak_seconds, on_done=on_done))),
            daemon=True)
        memory: list[dict[str, float]] = []
        t0 = time.monotonic()
        loader.start()
        kills: list[dict[str, Any]] = []
        next_kill = t0 + sizes.soak_kill_every
        next_sample = t0
        while loader.is_alive():
            now = time.monotonic()
            if now >= next_sample:
                w_sum, w_max = _tree_rss(bench.pid_of("worker"))
                web = bench.stack.processes.get("web")
                web_sum, web_max = _tree_rss(web.popen.pid if web else None)
                memory.append({"t": round(now - t0, 1), "worker_mb": round(w_sum, 1), "worker_max_mb": round(w_max, 1),
                               "web_mb": round(web_sum, 1),
                               "redis_used_mb": round(int(bench.broker.info("memory")["used_memory"]) / 1e6, 1)})
                next_sample = now + 5
            if now >= next_kill and now - t0 < sizes.soak_seconds - 5:
                name = worker_name(bench)
                proc = bench.stack.processes.pop(name)
                os.killpg(proc.popen.pid, _signal.SIGKILL)
                proc.popen.wait(10)
                bench.rss.unwatch("worker")
                _, spawned, ready = bench.start_worker()
                kills.append({"at_s": round(now - t0, 1), "killed": name, "replacement_ready_s": round(ready - now, 2),
                              "accepted_so_far": len(accepted)})
                log(f"soak: killed {name} at {now - t0:.0f}s; replacement ready after {ready - now:.1f}s")
                next_kill += sizes.soak_kill_every
            time.sleep(0.2)
        loader.join()
        res: loadgen.LoadResult = box["res"]
        n = len(accepted)
        log(f"soak: load done, {n} accepted of {res.sent}; waiting for every target")
        # Until every target holds every accepted event, or nothing has moved for 3 minutes (a
        # stall: what is missing then is reported as lost), at most 45 minutes.
        deadline = time.monotonic() + 2700
        counts: dict[str, int] = {}
        last_change, last_counts = time.monotonic(), None
        while time.monotonic() < deadline and time.monotonic() - last_change < 180:
            counts = {t: count_target(bench, t, prefix) for t in TARGETS}
            if all(c >= n for c in counts.values()):
                break
            if counts != last_counts:
                last_change, last_counts = time.monotonic(), counts
                log(f"soak: draining, {counts} of {n}")
            time.sleep(5)
        drained_after = round(time.monotonic() - t0 - sizes.soak_seconds, 1)
        with bench.pg().cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT call_id) FROM {OUR_PG_TABLE} WHERE call_id LIKE %s",
                        (prefix + "%",))
            pg_rows, pg_distinct = (int(x) for x in cur.fetchone())
        cur = bench.sf().cursor()
        cur.execute(f'SELECT COUNT(*), COUNT(DISTINCT "CALL_ID") FROM "{OUR_SF_TABLE}" WHERE "CALL_ID" LIKE ?',
                    [prefix + "%"])
        sf_rows, sf_distinct = (int(x) for x in cur.fetchone())
        memory_after = _tree_rss(bench.pid_of("worker"))
        time.sleep(2)  # the last releases
        leftover_batches = sum(1 for k in bench.broker.scan_iter(match="sophia:batch:*", count=1000)
                               if not k.endswith(b":pending"))
        first = [m for m in memory if m["t"] <= 60]
        last = [m for m in memory if m["t"] >= sizes.soak_seconds - 60]
        lost = {t: max(0, n - c) for t, c in counts.items()}
        out = {
            "method": "open-loop webhook load (one event per POST, fresh call ids under one prefix); the worker's "
                      "process group SIGKILLed on a timer and a replacement started at once; after the load, "
                      "every target counted by call-id prefix (Redis SCAN, SELECT count(*) and count(DISTINCT) in "
                      "PostgreSQL and Snowflake) until each holds every accepted event; RSS of the worker and web "
                      "process trees sampled every 5 s",
            "rate": sizes.soak_rate, "seconds": sizes.soak_seconds, "kill_every_s": sizes.soak_kill_every,
            "visibility_timeout_s": vt,
            "webhook": res.summary(), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "accepted": n, "kills": kills, "counts": counts, "lost": lost,
            "postgres_rows_distinct": [pg_rows, pg_distinct], "snowflake_rows_distinct": [sf_rows, sf_distinct],
            "duplicated": {"postgres": pg_rows - pg_distinct, "snowflake": sf_rows - sf_distinct},
            "drained_s_after_load": drained_after,
            "dead_letters": bench.dead_letters(),
            "memory_timeline": memory,
            "memory_first_minute_peak": {k: max((m[k] for m in first), default=None)
                                         for k in ("worker_mb", "worker_max_mb", "web_mb")},
            "memory_last_minute_peak": {k: max((m[k] for m in last), default=None)
                                        for k in ("worker_mb", "worker_max_mb", "web_mb")},
            "worker_mb_after_drain": round(memory_after[0], 1),
            "leftover_claim_batches": leftover_batches,
            "broker_unacked_after_drain": int(bench.broker.hlen("unacked")),
        }
        log(f"soak: accepted {n}; counts {counts}; lost {lost}; duplicated {out['duplicated']}; dead letters "
            f"{out['dead_letters']}; worker RSS peak first minute {out['memory_first_minute_peak']['worker_mb']} MB, "
            f"last minute {out['memory_last_minute_peak']['worker_mb']} MB")
        return out
    finally:
        for k, v in saved.items():
            if v is None:
                bench.stack.env.pop(k, None)
            else:
                bench.stack.env[k] = v
        bench.stop_role("worker")


DEFAULT_SCENARIOS = SCENARIOS
SCENARIOS = SCENARIOS + ("soak",)
