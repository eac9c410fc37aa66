"""inproc: the drain's work done in one process with no queue: the floor the drain is held to
(issue #19, target 5).

Per batch of ``sizes.inproc_batch`` events (500, the pipeline's batch): parse the events from JSON
bytes (as they come off a broker), journal them through ``sophia_tasks.store.journal`` (one
multi-row insert), run the flow's derivations through the spec (``stages.derive_documents``: the
gong enrichment), then one write per target through the project's materializers (one Redis
pipeline, one multi-row PostgreSQL upsert, one Snowflake MERGE), every derived document encoded
once for all targets as the pipeline does. Schema validation is not part of the floor (the
issue's definition); its cost on the same batches is measured apart and reported beside it, and
the validated documents are what the floor derives and writes, so both write the same rows.
"""
from __future__ import annotations

import time
from typing import Any

import orjson

from bench.calls import Calls
from bench.harness import BENCH_BACKENDS, Bench
from bench.scenarios.common import OUR_ROLES, TARGETS, Sizes, log, purge_broker
from bench.scenarios.targets import count_target


def inproc(bench: Bench, calls: Calls, sizes: Sizes) -> dict[str, Any]:
    from sophia_tasks.core.documents import encoding_cache
    from sophia_tasks.flows import load_spec
    from sophia_tasks.materializers import get_materializer, reset_instances
    from sophia_tasks.pipeline import stages
    from sophia_tasks.settings import load_settings
    from sophia_tasks.store.journal import append_events
    from sophia_tasks.store.sealing import sealer_for

    n, batch = sizes.inproc_events, sizes.inproc_batch
    bench.stop_role("worker")  # alone on the machine, as the drain's worker is
    purge_broker(bench)
    bench.clear_targets()
    settings = load_settings()
    spec = load_spec(settings.flow_path)
    sealer = sealer_for(settings)
    writers = {name: (get_materializer(m.endpoint, settings, spec), m) for name, m in spec.materializations.items()}
    stages.warm_derivations(spec)
    raw = [orjson.dumps(ev) for ev in calls.events(n)]  # prepared outside the measurement
    log(f"inproc: {n} events in batches of {batch}, one process, no queue")

    cpu = {"parse": 0.0, "validate (not in the floor)": 0.0, "journal": 0.0, "derive": 0.0}
    cpu.update({f"write {name}": 0.0 for name in writers})

    def run(events_raw: list[bytes], measure: bool) -> None:
        t = time.thread_time()

        def lap(stage: str) -> None:
            nonlocal t
            now = time.thread_time()
            if measure:
                cpu[stage] += now - t
            t = now

        events = [orjson.loads(r) for r in events_raw]
        lap("parse")
        validated = stages.validate_events(spec, events)
        lap("validate (not in the floor)")
        append_events(settings.postgres_dsn, events, "live", sealer)
        lap("journal")
        for collection, docs in validated.documents.items():
            derived = stages.derive_documents(spec, collection, docs)
            lap("derive")
            with encoding_cache():
                for out_collection, out_docs in derived.documents.items():
                    for name, (writer, mat) in writers.items():
                        binding = mat.binding_for(out_collection)
                        if binding is not None and out_docs:
                            writer.write_batch(binding, out_docs)
                            lap(f"write {name}")

    # The first batch creates the tables and opens the connections: out of the measurement.
    warm = [orjson.dumps(ev) for ev in calls.events(batch)]
    run(warm, measure=False)
    bench.clear_targets()
    with bench.pg().cursor() as cur:
        cur.execute("TRUNCATE sophia_journal")
    bench.rss.reset()
    bench.rss.sample(walk=True)
    t0 = time.monotonic()
    for i in range(0, n, batch):
        run(raw[i:i + batch], measure=True)
    wall = time.monotonic() - t0
    memory = bench.rss.snapshot()
    counted = {t: count_target(bench, t) for t in TARGETS}
    reset_instances()  # closes the writers' connections
    bench.clear_targets()
    floor_s = sum(v for k, v in cpu.items() if "not in the floor" not in k)
    services = {r: memory[r]["cpu_s"] for r in ("postgres", "redis") if memory.get(r, {}).get("cpu_s") is not None}
    others = {r: memory[r]["cpu_s"] for r in ("snowflake",) if memory.get(r, {}).get("cpu_s") is not None}
    per_ms = {"in-process floor (this thread)": round(1000 * floor_s / n, 3),
              **{r: round(1000 * v / n, 3) for r, v in services.items()},
              **{r: round(1000 * v / n, 3) for r, v in others.items()}}
    ours_ms = round(sum(per_ms[k] for k in per_ms if k not in others), 3)
    validate_ms = round(1000 * cpu["validate (not in the floor)"] / n, 3)
    log(f"inproc: {n / wall:.0f} ev/s; ms per event " + ", ".join(f"{k} {v}" for k, v in per_ms.items())
        + f"; floor total {ours_ms} (validation beside it {validate_ms}); rows {counted}")
    if any(c < n for c in counted.values()):
        raise RuntimeError(f"inproc: the targets hold {counted} of {n} documents: the floor did not do the work")
    return {
        "method": __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
        + " CPU: this thread's (time.thread_time, per stage) plus every postgres process and redis-server "
          "(psutil) over the measured batches; the Snowflake emulator reported, not counted (as for the drain).",
        "events": n,
        "batch": batch,
        "events_per_s": round(n / wall, 1),
        "documents": counted,
        "cpu_ms_per_event_by_stage": {k: round(1000 * v / n, 4) for k, v in cpu.items()},
        "cpu": {"per_process_ms": per_ms, "ours_ms": ours_ms, "counted": [k for k in per_ms if k not in others],
                "not_counted": list(others), "validation_ms_beside": validate_ms,
                "postgres_bench_backends_ms": round(1000 * memory[BENCH_BACKENDS]["cpu_s"] / n, 3)
                if memory.get(BENCH_BACKENDS, {}).get("cpu_s") is not None else None,
                "ours_with_validation_ms": round(ours_ms + validate_ms, 3)},
        "counted_roles_of_the_drain": list(OUR_ROLES),
        "memory": memory,
    }
