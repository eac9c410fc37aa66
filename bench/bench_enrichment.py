"""Throughput of the ``gong_calls_enriched`` derivation on one core.

Why: the derivation runs inline in the pipeline's derive stage, so its cost per call
bounds the pipeline's throughput. Target: at least 5,000 calls/s on one core.

Method: load ``tests/fixtures/gong_calls_corpus.ndjson`` (synthetic calls from the
seeded generator), repeat it to at least ``--calls`` calls, pin the process to one
CPU, warm up (regexes compiled, config cached), then time ``derive`` over batches of
``--batch`` calls with ``time.perf_counter``. Each run times every batch once; the
best and median of ``--runs`` runs are printed. ``--profile`` prints the top
functions under cProfile instead (slower, for finding hot spots).

    .venv/bin/python bench/bench_enrichment.py [--calls 20000] [--batch 500] [--runs 5]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sophia_tasks.derivations.gong_enrichment import derive  # noqa: E402

CORPUS = ROOT / "tests" / "fixtures" / "gong_calls_corpus.ndjson"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def load_calls(path: Path, at_least: int) -> list[dict[str, Any]]:
    """The corpus repeated until it holds ``at_least`` calls (distinct dict objects per copy
    are not needed: derive never mutates its input)."""
    corpus = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not corpus:
        raise SystemExit(f"{path} is empty")
    calls: list[dict[str, Any]] = []
    while len(calls) < at_least:
        calls.extend(corpus)
    return calls[:at_least]


def pin_one_core() -> str:
    """Pin to a single CPU so the figure is per core (Linux only; elsewhere a no-op)."""
    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def run_once(batches: list[list[dict[str, Any]]], config: dict[str, Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to derive every batch once.

    CPU time is reported too because on a shared machine wall time also counts the
    time other processes held the core; CPU time counts only ours.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        derive(batch, config, NOW)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--profile", action="store_true", help="print the top functions under cProfile")
    args = parser.parse_args(argv)

    pinned = pin_one_core()
    calls = load_calls(args.corpus, args.calls)
    batches = [calls[i:i + args.batch] for i in range(0, len(calls), args.batch)]
    config: dict[str, Any] = {}  # the flow spec's default: DEFAULT_CONFIG
    derive(batches[0], config, NOW)  # warm-up: config resolved and cached, regexes compiled

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_once(batches, config)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0

    timings = [run_once(batches, config) for _ in range(args.runs)]
    wall = [len(calls) / w for w, _ in timings]
    cpu = [len(calls) / c for _, c in timings]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, {pinned}, "
          f"load average {load:.2f}")
    print(f"{len(calls)} calls in batches of {args.batch}, {args.runs} runs")
    print(f"wall: {', '.join(f'{r:,.0f}' for r in wall)} calls/s")
    print(f"cpu:  {', '.join(f'{r:,.0f}' for r in cpu)} calls/s")
    print(f"best {max(wall):,.0f} calls/s wall ({max(cpu):,.0f} per CPU-second), "
          f"median {statistics.median(wall):,.0f} calls/s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
