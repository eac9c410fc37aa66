"""drain: N accepted events sitting on the broker, then a worker starts: time until all are in each
target; plus the Snowflake emulator's own raw insert rate, measured in the same run."""
from __future__ import annotations

import time
from typing import Any

import orjson

from bench.calls import Calls
from bench.harness import OUR_SF_TABLE, Bench
from bench.scenarios.common import TARGETS, Sizes, cpu_per_event, enriched_rows, log, purge_broker, task_stats
from bench.scenarios.profiling import run_profile
from bench.scenarios.targets import load_broker, wait_targets


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
    log(f"drain: {queued} ingest messages on the broker; starting the worker")
    proc, t_spawn, t_ready = bench.start_worker()
    # CPU from the worker's "ready." on, as the drain's time: its start-up (imports, forking the pool)
    # is no per-event work. Peak RSS from here on too.
    bench.rss.reset()
    bench.rss.sample(walk=True)
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
                  "20 ms, confirmed by Redis EXISTS on the run's keys / SELECT count(*) / Snowflake SELECT COUNT(*)); "
                  "CPU per process over the same span (from 'ready.' until the last target holds N)",
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
        # From the worker's start to the last target: what draining costs per event, process by process.
        "cpu": cpu_per_event(memory, n),
    }
    if profile is not None:
        result["profile"] = run_profile(bench, calls, sizes, per_target, profile)
    return result
