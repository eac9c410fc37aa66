"""The benchmark's ingest figures: the CPU-per-request ratio beside the rate ratio."""
from __future__ import annotations

import os

import pytest

from bench.report import target_rows
from bench.scenarios import cpu_per_request_ratio


def step(c: int, floor_ms: float | None, ours_ms: float | None) -> dict:
    def side(rate: float, ms: float | None) -> dict:
        out = {"accepted_per_s": rate, "p50_ms": 1.0, "p99_ms": 2.0}
        if ms is not None:
            out["server_cpu_ms_per_accepted"] = ms
        return out

    return {"concurrency": c, "floor": side(3000.0, floor_ms), "ours": side(2400.0, ours_ms),
            "ratio_to_floor": 0.8, "cpu_ratio_to_floor": cpu_per_request_ratio(side(0, floor_ms), side(0, ours_ms))}


def test_cpu_ratio_is_floor_cost_over_ours_and_none_without_readings() -> None:
    assert cpu_per_request_ratio({"server_cpu_ms_per_accepted": 0.5}, {"server_cpu_ms_per_accepted": 0.625}) == 0.8
    assert cpu_per_request_ratio({}, {"server_cpu_ms_per_accepted": 0.6}) is None
    assert cpu_per_request_ratio({"server_cpu_ms_per_accepted": 0.5}, {"server_cpu_ms_per_accepted": 0}) is None


def test_report_shows_the_cpu_ratio_row_only_when_measured() -> None:
    steps = [step(8, 0.5, 0.625), step(32, 0.4, 0.5)]
    rows = target_rows({"ingest": {"peak_ratio": 0.8, "peak_ours_per_s": 2400, "peak_floor_per_s": 3000,
                                   "steps": steps, "median_cpu_ratio": 0.8}})
    cpu = [r for r in rows if r["figure"].startswith("ingest: server CPU per request")]
    assert len(cpu) == 1 and cpu[0]["value"] == "0.80x" and cpu[0]["status"] == "info"
    assert "0.500 vs 0.625" in cpu[0]["note"] and "0.400 vs 0.500" in cpu[0]["note"]
    rows = target_rows({"ingest": {"peak_ratio": 0.8, "peak_ours_per_s": 2400, "peak_floor_per_s": 3000,
                                   "steps": [step(8, None, None)], "median_cpu_ratio": None}})
    assert not [r for r in rows if r["figure"].startswith("ingest: server CPU per request")]


def backfill(redis_p99: float | None, pg_p99: float | None, missing: int = 0) -> dict:
    def lag(p99: float | None) -> dict:
        return {"samples": 0 if p99 is None else 600, "missing": missing, "p50_s": None, "p95_s": None,
                "p99_s": p99, "max_s": None}

    return {"backfill": {"events": 100_000, "command": {"exit_code": 0},
                         "targets": {t: {"events_per_s": 400.0} for t in ("redis", "postgres", "snowflake")},
                         "live_webhook": {"p99_ms": 30.0, "accepted": 6000, "errors": 0},
                         "live_lag_sampled": {"redis": lag(redis_p99), "postgres": lag(pg_p99)}}}


def held(rows: list[dict]) -> dict[str, str]:
    return {r["figure"]: r["status"] for r in rows if r["figure"].startswith("live lag p99")}


def test_backfill_rows_hold_the_live_lag_to_the_latency_limits() -> None:
    assert held(target_rows(backfill(0.4, 0.5))) == {"live lag p99 -> Redis during backfill": "PASS",
                                                     "live lag p99 -> Postgres during backfill": "PASS"}
    # Redis over 1 s fails; PostgreSQL's limit is 2 s.
    assert held(target_rows(backfill(1.2, 1.9))) == {"live lag p99 -> Redis during backfill": "FAIL",
                                                     "live lag p99 -> Postgres during backfill": "PASS"}
    # A sampled event that never arrived is not held, whatever the p99 of the ones that did.
    assert set(held(target_rows(backfill(0.4, 0.5, missing=3))).values()) == {"FAIL"}
    # No samples at all: not measured.
    assert set(held(target_rows(backfill(None, None))).values()) == {"n/a"}


def test_counts_come_rarely_while_much_is_left_and_often_near_the_end() -> None:
    from bench.scenarios import next_count_in

    assert next_count_in(0, 100_000, 3.0) == 1.0  # nothing yet: no rate to go by
    # 10,000 of 100,000 after 60 s: 540 s left at that rate; at most every 5 s.
    assert next_count_in(10_000, 100_000, 60.0) == 5.0
    # 19,000 of 20,000 after 38 s: 2 s left, so count again in 0.2 s... but not more often than 0.25 s.
    assert next_count_in(19_000, 20_000, 38.0) == 0.25
    # 18,000 of 20,000 after 36 s: 4 s left, a tenth of it.
    assert abs(next_count_in(18_000, 20_000, 36.0) - 0.4) < 1e-9
    assert next_count_in(20_000, 20_000, 40.0) == 0.25


def test_the_machine_speed_row_lists_each_scenarios_calibration() -> None:
    from bench.harness import calibrate

    ms = calibrate(rounds=1)
    assert ms > 0
    rows = target_rows({"drain": {"calibration_ms_before_after": [120.5, 181.0]},
                        "latency": {"calibration_ms_before_after": [119.0, 121.0]}})
    speed = [r for r in rows if r["figure"].startswith("machine speed")]
    assert len(speed) == 1 and speed[0]["value"] == "drain 120.5/181, latency 119/121"
    assert not [r for r in target_rows({"drain": {}}) if r["figure"].startswith("machine speed")]


def test_rss_sampler_walks_the_process_table_at_most_every_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples between walks read the processes already found; a new root is walked at once."""
    import subprocess
    import sys

    from bench import harness

    walks: list[int] = []
    real_tree_procs = harness.tree_procs

    def counting_tree_procs(pid: int | None) -> list:
        walks.append(pid or 0)
        return real_tree_procs(pid)

    monkeypatch.setattr(harness, "tree_procs", counting_tree_procs)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sampler = harness.RssSampler()
        sampler.REFRESH_S = 3600.0
        sampler.watch("tree", child.pid)
        for _ in range(5):
            sampler.sample()
        assert walks == [child.pid]
        assert sampler.peaks["tree"].tree_mb > 0

        sampler.watch("other", os.getpid())  # a new root: walked at the next sample
        sampler.sample()
        assert sorted(walks) == sorted([child.pid, child.pid, os.getpid()])

        sampler.sample(walk=True)
        assert len(walks) == 5
        snap = sampler.snapshot()  # snapshot walks again, so it sees the trees as they are now
        assert len(walks) == 7
        assert "cpu_s" in snap["tree"]
    finally:
        child.kill()
        child.wait()


def test_lag_windows_group_sampled_lags_by_send_time() -> None:
    from bench.scenarios import lag_windows

    timeline = [(1.0, 0.2), (29.9, 0.4), (30.0, 3.0), (45.0, 1.0), (95.0, 0.1)]
    rows = lag_windows(timeline, 30.0)
    assert [(r["from_s"], r["n"], r["max_s"]) for r in rows] == [(0.0, 2, 0.4), (30.0, 2, 3.0), (90.0, 1, 0.1)]
    assert lag_windows([], 30.0) == []
