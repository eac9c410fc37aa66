"""The benchmark scenarios. Each takes the running ``Bench`` and returns a JSON-able dict.

ingest   webhook accept rate in interleaved rounds beside the floor app under gunicorn and granian (target 3)
reads    documents read in interleaved rounds beside a bare Redis GET endpoint; then p99 at a fixed rate (target 4)
cpu      CPU per live event of each process at 350 ev/s, single-event POSTs (target 1)
latency  steady open-loop webhook load at 500 ev/s; receipt-to-materialized quantiles per target (target 2)
drain    N accepted events sitting on the broker, then a worker starts: time and CPU until all are in each
         target; plus the Snowflake emulator's own raw insert rate, measured in the same run
inproc   the drain's work in one process with no queue: the floor of the drain's CPU per event (target 5)
naive    the one-chain-per-event / one-row-per-write baseline (bench/naive.py) on its own worker (target 6)
backfill ``sophia-tasks backfill --file`` of N calls with a steady live webhook load beside it (not default)
soak     steady webhook load with the worker SIGKILLed on a timer (target 6; not default: 10 minutes)

This package is the registry the runner dispatches on (``getattr(scenarios, name)`` for each name
of ``SCENARIOS``); each scenario lives in a module of its own, the shared helpers in ``common``,
``targets``, ``rounds``, ``lag`` and ``profiling``.
"""
from __future__ import annotations

from bench.scenarios.backfill_scenario import backfill
from bench.scenarios.common import Sizes, cpu_per_event, log
from bench.scenarios.drain_scenario import drain
from bench.scenarios.ingest_scenario import ingest
from bench.scenarios.inproc_scenario import inproc
from bench.scenarios.lag import lag_windows
from bench.scenarios.latency_scenario import cpu, latency
from bench.scenarios.naive_scenario import naive
from bench.scenarios.reads_scenario import reads
from bench.scenarios.rounds import compare
from bench.scenarios.soak_scenario import soak
from bench.scenarios.targets import next_count_in

DEFAULT_SCENARIOS = ("ingest", "reads", "cpu", "latency", "drain", "inproc", "naive")
# The soak runs 10 minutes and the backfill is no target of issue #19: only when asked for.
SCENARIOS = DEFAULT_SCENARIOS + ("backfill", "soak")
# --quick: the subset that runs in a few minutes (every target but the soak's).
QUICK_SCENARIOS = DEFAULT_SCENARIOS

__all__ = [
    "DEFAULT_SCENARIOS",
    "QUICK_SCENARIOS",
    "SCENARIOS",
    "Sizes",
    "backfill",
    "compare",
    "cpu",
    "cpu_per_event",
    "drain",
    "ingest",
    "inproc",
    "lag_windows",
    "latency",
    "log",
    "naive",
    "next_count_in",
    "reads",
    "soak",
]
