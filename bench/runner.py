"""Command line of the benchmark: start the stack, run the chosen scenarios, print and save."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from sophia_tasks.dev.stack import ROOT, ensure_services, port_open

RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from bench.scenarios import DEFAULT_SCENARIOS, SCENARIOS

    p = argparse.ArgumentParser(prog="python -m bench", description=(
        "Benchmark sophia-tasks on the real stack (the web under granian or gunicorn, Celery worker, Redis, "
        "PostgreSQL, the Snowflake emulator) on benchmark-only databases and ports, against the targets of issue #19; "
        "prints each target with PASS or FAIL and writes the JSON results (docs/benchmarks.md)."))
    p.add_argument("--quick", action="store_true",
                   help="small sizes, a few minutes in all (4 s ingest sides, 3 s read sides, 10 s cpu and latency "
                        "runs, 2,000-event drain and in-process floor, 300-event naive baseline)")
    p.add_argument("--scenario", default=",".join(DEFAULT_SCENARIOS),
                   help=f"comma-separated subset of {','.join(SCENARIOS)} (default: {','.join(DEFAULT_SCENARIOS)}; "
                        "the soak runs 10 minutes: --scenario soak)")
    p.add_argument("--profile", action="store_true",
                   help="after the drain, drain again under py-spy (worker tree); after the ingest rounds, one more "
                        "webhook run under py-spy (the web's tree); both summarised (what dominates CPU)")
    p.add_argument("--profile-seconds", type=float, default=20)
    p.add_argument("--events", type=int, help="drain size (default 20,000; --quick 2,000)")
    p.add_argument("--inproc-events", type=int, help="in-process floor size (default 20,000; --quick 2,000)")
    p.add_argument("--naive-events", type=int, help="naive baseline size (default 2,000; --quick 300)")
    p.add_argument("--cpu-rate", type=float, help="events/s of the cpu run (default 350)")
    p.add_argument("--cpu-seconds", type=float, help="length of the cpu run (default 60; --quick 10)")
    p.add_argument("--latency-rate", type=float, help="events/s of the latency run (default 500)")
    p.add_argument("--latency-seconds", type=float, help="length of the latency run (default 60; --quick 10)")
    p.add_argument("--rounds", type=int, help="interleaved rounds of the ingest and reads comparisons (default 3)")
    p.add_argument("--connections", type=int, help="connections of the ingest and reads rounds (default 32)")
    p.add_argument("--ingest-seconds", type=float, help="seconds per side of an ingest round (default 15; --quick 4)")
    p.add_argument("--reads-round-seconds", type=float,
                   help="seconds per side of a reads round (default 10; --quick 3)")
    p.add_argument("--reads-rate", type=float, help="requests/s of the fixed-rate reads (default 1,000)")
    p.add_argument("--reads-seconds", type=float, help="length of the fixed-rate reads (default 30; --quick 5)")
    p.add_argument("--backfill-events", type=int, help="calls in the backfill file (default 100,000; --quick 5,000)")
    p.add_argument("--soak-rate", type=float, help="events/s of the soak (default 500)")
    p.add_argument("--soak-seconds", type=float, help="length of the soak (default 600)")
    p.add_argument("--soak-kill-every", type=float, help="seconds between worker kills in the soak (default 60)")
    p.add_argument("--broker-db", type=int, default=14, help="Redis db of the broker (default 14)")
    p.add_argument("--cache-db", type=int, default=15, help="Redis db of the cache target (default 15)")
    p.add_argument("--web-workers", type=int, default=2)
    p.add_argument("--web-threads", type=int, default=4)
    p.add_argument("--web-server", choices=("granian", "gunicorn"), default="granian",
                   help="the web's server: granian (the Procfile's python -m web.serve, default) or gunicorn "
                        "(deploy/gunicorn.conf.py)")
    p.add_argument("--worker-concurrency", type=int, default=6)
    p.add_argument("--keep-data", action="store_true",
                   help="keep the benchmark's Redis dbs, emulator data and backfill file after the run "
                        "(default: emptied, the logs and PostgreSQL database sophia_bench stay)")
    p.add_argument("--out", type=Path, help="results file (default bench/results/<date>.json, "
                                            "<date>-quick.json with --quick)")
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    if args.broker_db == args.cache_db:
        p.error("--broker-db and --cache-db must differ")
    return args


def sizes_from(args: argparse.Namespace) -> Any:
    from bench.scenarios import Sizes

    s = Sizes.for_mode(args.quick)
    if args.events:
        s.drain_events = args.events
        s.sf_raw_events = min(s.sf_raw_events, args.events)
    for name in ("naive_events", "inproc_events", "cpu_rate", "cpu_seconds", "latency_rate", "latency_seconds",
                 "rounds", "connections", "ingest_seconds", "reads_round_seconds", "reads_rate", "reads_seconds",
                 "backfill_events", "soak_rate", "soak_seconds", "soak_kill_every"):
        value = getattr(args, name)
        if value:
            setattr(s, name, value)
    return s


def ensure_py_spy() -> None:
    from sophia_tasks.dev.stack import BIN

    if (BIN / "py-spy").exists() or shutil.which("py-spy"):
        return
    print("bench: installing py-spy into the venv for --profile", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy>=0.3.14"], check=False)


def cleanup(bench: Any) -> None:
    """Give the shared Redis its memory back (a full run leaves ~1 GB of documents) and drop the
    emulator's data and the backfill file; logs and the sophia_bench database stay for inspection."""
    try:
        bench.broker.flushdb()
        bench.cache.flushdb()
    except Exception as exc:
        print(f"bench: could not empty the benchmark's Redis dbs: {exc}", file=sys.stderr)
    shutil.rmtree(bench.env["SOPHIA_SNOWFLAKE_DATA_DIR"], ignore_errors=True)
    for f in bench.workdir.glob("backfill-*.ndjson"):
        f.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench import scenarios as sc
    from bench.calls import Calls
    from bench.harness import Bench, BenchLock, calibrate, kill_tree_on_exit
    from bench.report import machine_info, print_table, target_rows, write_json

    _lock = BenchLock()  # noqa: F841 - held until the process exits
    ensure_services()
    missing = [f"{n}:{p}" for n, p in (("redis", 6379), ("postgres", 5432)) if not port_open("127.0.0.1", p)]
    if missing:
        print(f"bench: services not reachable: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.profile:
        ensure_py_spy()
    sizes = sizes_from(args)
    date = time.strftime("%Y-%m-%d")
    out = args.out or RESULTS / (f"{date}-quick.json" if args.quick else f"{date}.json")
    workdir = ROOT / "var" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    bench = Bench(workdir=workdir, broker_db=args.broker_db, cache_db=args.cache_db, web_workers=args.web_workers,
                  web_threads=args.web_threads, web_server=args.web_server,
                  worker_concurrency=args.worker_concurrency)
    kill_tree_on_exit(bench)
    calls = Calls()
    results: dict[str, Any] = {
        "date": date,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if args.quick else "full",
        "argv": sys.argv[1:] if argv is None else argv,
        "sizes": dict(vars(sizes)),
        "stack": {"broker": bench.env["SOPHIA_BROKER_URL"], "cache": bench.env["SOPHIA_REDIS_URL"],
                  "postgres": bench.env["SOPHIA_POSTGRES_DSN"], "web": bench.url,
                  "web_server": {"server": args.web_server, "workers": args.web_workers, "threads": args.web_threads,
                                 "config": "python -m web.serve" if args.web_server == "granian" else
                                 "deploy/gunicorn.conf.py"},
                  "worker_concurrency": args.worker_concurrency, "logs": str(workdir / "logs")},
        "calls_source": calls.source,
        "scenarios": {},
    }
    sc.log(f"logs in {workdir / 'logs'}; results to {out}")
    try:
        bench.reset_state()
        bench.start()
        results["machine"] = machine_info(bench)
        for name in sc.SCENARIOS:
            if name not in args.scenarios:
                continue
            sc.log(f"=== {name} (load average {', '.join(f'{x:.2f}' for x in os.getloadavg())})")
            started = time.monotonic()
            load_before = os.getloadavg()[0]
            speed_before = calibrate()
            try:
                fn = getattr(sc, name)
                if name in ("drain", "ingest"):
                    # One name per run: a second profile the same day must not overwrite the first.
                    run = time.strftime("%Y-%m-%d-%H%M%S")
                    stem = f"profile-{run}" if name == "drain" else f"profile-web-{run}"
                    res = fn(bench, calls, sizes, profile={"dir": RESULTS, "stem": stem,
                                                           "seconds": args.profile_seconds}
                             if args.profile else None)
                else:
                    res = fn(bench, calls, sizes)
            except Exception as exc:
                traceback.print_exc()
                res = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            res["wall_s"] = round(time.monotonic() - started, 1)
            res["loadavg_1m_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            res["calibration_ms_before_after"] = [speed_before, calibrate()]
            results["scenarios"][name] = res
            write_json(out, results)  # partial results survive a later failure
    finally:
        bench.close()
        if not args.keep_data:
            cleanup(bench)
    rows = target_rows(results["scenarios"])
    results["targets"] = rows
    cores = os.cpu_count() or 1
    loads = [x for r in results["scenarios"].values() for x in r.get("loadavg_1m_before_after", [])]
    if loads and max(loads) > cores:
        results["warnings"] = [f"the machine was busy during the run (1-minute load average up to {max(loads):.1f} "
                               f"on {cores} cores): other processes competed for the CPU, so these figures "
                               "understate what the stack does on a quiet machine"]
    speeds = [x for r in results["scenarios"].values() for x in r.get("calibration_ms_before_after", [])]
    if speeds and max(speeds) > 1.3 * min(speeds):
        results.setdefault("warnings", []).append(
            f"the machine's speed changed during the run: the same fixed Python loop took {min(speeds):.0f} to "
            f"{max(speeds):.0f} ms between scenarios (a shared host); compare CPU figures only between runs "
            "of similar calibration")
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(out, results)
    machine = results.get("machine", {})
    title = (f"sophia-tasks benchmark ({results['mode']}) {date} - {machine.get('cores_logical')} cores, "
             f"{machine.get('memory_gb')} GB, Python {machine.get('python')}, load avg at start "
             f"{machine.get('loadavg_at_start')}")
    print_table(rows, title)
    for w in results.get("warnings", []):
        print(f"WARNING: {w}")
    print(f"results: {out}")
    return 0
