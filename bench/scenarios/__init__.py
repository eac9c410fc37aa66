"""The benchmark scenarios. Each takes the running ``Bench`` and returns a JSON-able dict.

ingest   webhook accept rate at increasing concurrency, beside the floor app (same gunicorn settings)
drain    N accepted events sitting on the broker, then a worker starts: time until all are in each target;
         plus the Snowflake emulator's own raw insert rate, measured in the same run
naive    the one-chain-per-event / one-row-per-write baseline (bench/naive.py) on its own worker
latency  steady open-loop webhook load; receipt-to-materialized quantiles per target
backfill ``sophia-tasks backfill --file`` of N calls with a steady live webhook load beside it
soak     steady webhook load with the worker SIGKILLed on a timer (not in the default set)

This package is the registry the runner dispatches on (``getattr(scenarios, name)`` for each name
of ``SCENARIOS``); each scenario lives in a module of its own, the shared helpers in ``common``,
``targets``, ``lag`` and ``profiling``.
"""
from __future__ import annotations

from bench.scenarios.backfill_scenario import backfill
from bench.scenarios.common import Sizes, log
from bench.scenarios.drain_scenario import drain
from bench.scenarios.ingest_scenario import cpu_per_request_ratio, ingest
from bench.scenarios.lag import lag_windows
from bench.scenarios.latency_scenario import latency
from bench.scenarios.naive_scenario import naive
from bench.scenarios.soak_scenario import soak
from bench.scenarios.targets import next_count_in

DEFAULT_SCENARIOS = ("ingest", "drain", "naive", "latency", "backfill")
# The soak runs 10 minutes: only when asked for (`python -m bench --scenario soak`).
SCENARIOS = DEFAULT_SCENARIOS + ("soak",)

__all__ = [
    "DEFAULT_SCENARIOS",
    "SCENARIOS",
    "Sizes",
    "backfill",
    "cpu_per_request_ratio",
    "drain",
    "ingest",
    "lag_windows",
    "latency",
    "log",
    "naive",
    "next_count_in",
    "soak",
]
