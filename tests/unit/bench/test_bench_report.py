"""The benchmark's report: issue #19's targets, each PASS / FAIL / n/a from a run's results."""
from __future__ import annotations

import os
from typing import Any

import pytest

from bench.report import target_rows
from bench.scenarios import compare, cpu_per_event


def by_figure(rows: list[dict], prefix: str) -> list[dict]:
    return [r for r in rows if r["figure"].startswith(prefix)]


def one(rows: list[dict], prefix: str) -> dict:
    found = by_figure(rows, prefix)
    assert len(found) == 1, [r["figure"] for r in rows]
    return found[0]


def side(rate: float, cpu_ms: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"accepted_per_s": rate, "p99_ms": 2.0}
    if cpu_ms is not None:
        out["server_cpu_ms_per_accepted"] = cpu_ms
    return out


def test_compare_takes_the_faster_floor_by_median_and_the_median_of_per_round_ratios() -> None:
    rounds = [{"floor-gunicorn": side(3000, 0.5), "floor-granian": side(4000, 0.4), "ours": side(3000, 0.8)},
              {"floor-gunicorn": side(3100, 0.5), "floor-granian": side(2000, 0.4), "ours": side(1800, 0.8)},
              {"floor-gunicorn": side(2900, 0.5), "floor-granian": side(4200, 0.4), "ours": side(3570, 0.5)}]
    res = compare(rounds, ["floor-gunicorn", "floor-granian"])
    # granian's median (4,000) beats gunicorn's (3,000), even though gunicorn won round 2.
    assert res["fastest_floor"] == "floor-granian"
    assert res["ratios"] == [0.75, 0.9, 0.85] and res["ratio"] == 0.85
    assert res["cpu_ratios"] == [0.5, 0.5, 0.8] and res["cpu_ratio"] == 0.5
    assert res["floor_medians"] == {"floor-gunicorn": 3000, "floor-granian": 4000}


def test_compare_skips_a_floor_that_never_answered_and_gives_none_without_any() -> None:
    rounds = [{"floor-gunicorn": side(3000), "floor-granian": side(0), "ours": side(2700)}]
    assert compare(rounds, ["floor-gunicorn", "floor-granian"])["fastest_floor"] == "floor-gunicorn"
    empty = compare([{"floor-gunicorn": side(0), "ours": side(2700)}], ["floor-gunicorn"])
    assert empty["ratio"] is None and empty["fastest_floor"] is None


def test_cpu_per_event_counts_web_worker_postgres_and_redis_only() -> None:
    memory = {"web": {"cpu_s": 11.6}, "worker": {"cpu_s": 10.5}, "postgres": {"cpu_s": 2.7},
              "redis": {"cpu_s": 2.2}, "snowflake": {"cpu_s": 9.0}, "bench (load generator)": {"cpu_s": 3.3},
              "floor": {"peak_tree_rss_mb": 80.0}, "postgres (sophia_bench backends)": {"cpu_s": 2.1}}
    c = cpu_per_event(memory, 10_000)
    assert c["postgres_bench_backends_ms"] == 0.21  # a part of postgres: neither added nor listed apart
    assert c["per_process_ms"] == {"web": 1.16, "worker": 1.05, "postgres": 0.27, "redis": 0.22, "snowflake": 0.9,
                                   "bench (load generator)": 0.33}
    assert c["ours_ms"] == 2.7
    assert c["counted"] == ["web", "worker", "postgres", "redis"]
    assert c["not_counted"] == ["snowflake", "bench (load generator)"]
    assert cpu_per_event(memory, 0)["ours_ms"] is None


def cpu_run(ours_ms: float, written: int = 21_000, achieved: float = 350.0, sent: int = 21_000) -> dict[str, Any]:
    per = {"web": ours_ms / 2, "worker": ours_ms / 4, "postgres": ours_ms / 8, "redis": ours_ms / 8,
           "snowflake": 0.9, "bench (load generator)": 0.33}
    return {"cpu": {"rate": 350, "achieved_rate": achieved, "webhook": {"sent": sent, "accepted": 21_000, "errors": 0},
                    "materialized": {"redis": written, "postgres": written, "snowflake": written},
                    "cpu": {"per_process_ms": per, "ours_ms": ours_ms, "postgres_bench_backends_ms": 0.1},
                    "calibration_ms_before_after": [230.0, 241.5]}}


def test_target_1_cpu_per_live_event_passes_at_or_under_the_limit_with_each_process_shown() -> None:
    rows = target_rows(cpu_run(1.35))
    main = one(rows, "1. CPU per live event")
    assert (main["status"], main["value"], main["calibration"]) == ("PASS", "1.350 ms", "230/241.5")
    each = one(rows, "   each process")
    assert each["value"] == "web 0.675, worker 0.338, postgres 0.169, redis 0.169"
    assert "snowflake 0.900" in each["note"] and "bench (load generator) 0.330" in each["note"]
    assert "sophia_bench backends 0.100" in each["note"]
    assert one(target_rows(cpu_run(2.7)), "1. CPU")["status"] == "FAIL"
    # A cheap figure from a run that did not keep up or did not write everything is no pass.
    assert one(target_rows(cpu_run(1.0, written=20_000)), "1. CPU")["status"] == "FAIL"
    assert one(target_rows(cpu_run(1.0, achieved=300.0)), "1. CPU")["status"] == "FAIL"
    assert one(target_rows(cpu_run(1.0, sent=21_500)), "1. CPU")["status"] == "FAIL"  # 500 refused (503)
    assert one(target_rows({}), "1. CPU")["status"] == "n/a"


def latency_run(p99: dict[str, float], share: dict[str, float]) -> dict[str, Any]:
    limits = {"redis": "1.0", "postgres": "2.0", "snowflake": "5.0"}
    webhook = {"sent": 30_000, "accepted": 30_000, "errors": 0, "p50_ms": 3.0, "p99_ms": 20.0}
    return {"latency": {"rate": 500, "seconds": 60, "achieved_rate": 499.0, "webhook": webhook,
                        "materialized": {t: 30_000 for t in limits},
                        "lag_histogram": {t: {"p99_s": p99[t], "share_within_s": {limits[t]: share[t]}}
                                          for t in limits}}}


def test_target_2_latency_holds_redis_postgres_and_snowflake_to_their_limits() -> None:
    rows = target_rows(latency_run({"redis": 0.4, "postgres": 1.1, "snowflake": 4.0},
                                   {"redis": 0.999, "postgres": 0.995, "snowflake": 0.99}))
    statuses = {r["figure"]: r["status"] for r in by_figure(rows, "2. p99")}
    assert statuses == {"2. p99 receipt -> Redis at 500 ev/s": "PASS",
                        "2. p99 receipt -> PostgreSQL at 500 ev/s": "PASS",
                        "2. p99 receipt -> Snowflake at 500 ev/s": "PASS"}
    rows = target_rows(latency_run({"redis": 0.4, "postgres": 1.1, "snowflake": 5.0},
                                   {"redis": 0.999, "postgres": 0.995, "snowflake": 0.97}))
    assert one(rows, "2. p99 receipt -> Snowflake")["status"] == "FAIL"
    refused = latency_run({"redis": 0.4, "postgres": 1.1, "snowflake": 4.0},
                          {"redis": 0.999, "postgres": 0.995, "snowflake": 0.99})
    refused["latency"]["webhook"]["sent"] = 30_500  # 500 answered 503: a fast lag of the rest is no pass
    assert {r["status"] for r in by_figure(target_rows(refused), "2. p99")} == {"FAIL"}


def ingest_run(ratios: list[float]) -> dict[str, Any]:
    rounds = [{"floor-gunicorn": side(3000, 0.5), "floor-granian": side(4000, 0.4), "ours": side(4000 * r, 0.6)}
              for r in ratios]
    return {"ingest": {"connections": 32, "rounds": rounds, **compare(rounds, ["floor-gunicorn", "floor-granian"]),
                       "calibration_ms_before_after": [200.0, 210.0]}}


def test_target_3_ingest_needs_the_median_ratio_over_at_least_three_rounds() -> None:
    rows = target_rows(ingest_run([0.79, 0.82, 0.9]))
    main = one(rows, "3. ingest")
    assert (main["status"], main["value"], main["calibration"]) == ("PASS", "0.82x", "200/210")
    assert "fastest floor-granian" in main["note"] and "0.79, 0.82, 0.90" in main["note"]
    assert one(rows, "   ingest: server CPU")["value"] == "0.67x"
    assert one(target_rows(ingest_run([0.7, 0.79, 0.95])), "3. ingest")["status"] == "FAIL"
    two = one(target_rows(ingest_run([0.9, 0.9])), "3. ingest")
    assert two["status"] == "n/a" and "only 2 rounds" in two["note"]


def reads_run(p99: float, ratios: list[float], answered: int = 30_000) -> dict[str, Any]:
    rounds = [{"floor-gunicorn": side(3000), "ours": side(3000 * r)} for r in ratios]
    return {"reads": {"rate": 1000, "rounds": rounds, **compare(rounds, ["floor-gunicorn"]),
                      "fixed_rate": {"ours": {"sent": 30_000, "accepted": answered, "achieved_rate": 999.0,
                                              "p50_ms": 2.0, "p99_ms": p99},
                                     "floor-gunicorn": {"p99_ms": 4.0}}}}


def test_target_4_reads_p99_at_a_fixed_rate_and_the_ratio_to_a_bare_redis_get() -> None:
    rows = target_rows(reads_run(8.0, [0.85, 0.8, 0.9]))
    assert one(rows, "4. reads: p99")["status"] == "PASS"
    assert one(rows, "4. reads: ours / bare")["status"] == "PASS"
    assert one(target_rows(reads_run(12.0, [0.85, 0.8, 0.9])), "4. reads: p99")["status"] == "FAIL"
    # Refused reads (401, 429...) are not answered reads, however fast.
    assert one(target_rows(reads_run(3.0, [0.85] * 3, answered=29_000)), "4. reads: p99")["status"] == "FAIL"
    assert one(target_rows(reads_run(8.0, [0.7, 0.75, 0.9])), "4. reads: ours / bare")["status"] == "FAIL"


def drain_and_floor(drain_ms: float, floor_ms: float, complete: bool = True) -> dict[str, Any]:
    return {"drain": {"targets": {t: {"complete": complete, "events_per_s": 6000.0} for t in
                                  ("redis", "postgres", "snowflake")},
                      "cpu": {"ours_ms": drain_ms, "per_process_ms": {"worker": drain_ms}},
                      "calibration_ms_before_after": [230.0, 240.0]},
            "inproc": {"cpu": {"ours_ms": floor_ms, "per_process_ms": {"in-process floor (this thread)": floor_ms},
                               "validation_ms_beside": 0.1}, "calibration_ms_before_after": [231.0, 232.0]}}


def test_target_5_the_drain_against_the_in_process_floor() -> None:
    main = one(target_rows(drain_and_floor(1.2, 0.8)), "5. drain CPU")
    assert (main["status"], main["value"]) == ("PASS", "1.200 / 0.800 ms = 1.50x")
    assert main["calibration"] == "drain 230/240, inproc 231/232"
    assert one(target_rows(drain_and_floor(1.3, 0.8)), "5. drain CPU")["status"] == "FAIL"
    assert one(target_rows(drain_and_floor(1.0, 0.8, complete=False)), "5. drain CPU")["status"] == "FAIL"
    assert one(target_rows({"drain": drain_and_floor(1.0, 0.8)["drain"]}), "5. drain CPU")["status"] == "n/a"


def test_target_6_drain_against_naive_rss_and_a_soak_not_run() -> None:
    s = drain_and_floor(1.0, 0.8)
    s["drain"]["memory"] = {"worker": {"peak_process_rss_mb": 180.0, "peak_tree_rss_mb": 900.0}}
    s["naive"] = {"targets": {"redis": {"events_per_s": 600.0, "complete": True},
                              "postgres": {"events_per_s": 601.0, "complete": True}}}
    rows = target_rows(s)
    assert one(rows, "6. drain -> Redis / naive")["status"] == "PASS"  # 6,000 / 600 = 10x
    assert one(rows, "6. drain -> PostgreSQL / naive")["status"] == "FAIL"  # 9.98x
    assert one(rows, "6. worker RSS")["status"] == "PASS"
    soak = one(rows, "6. soak")
    assert soak["status"] == "n/a" and soak["note"] == "not run"


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


def test_a_process_started_inside_the_window_is_charged_its_cpu_from_birth() -> None:
    """A database connection opened mid-drain is first seen at the next walk: the CPU it used before
    that is the window's too. A process older than the window is charged only from its first sight."""
    import subprocess
    import sys
    import time

    import psutil

    from bench import harness

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(30)"

    def burned(proc: subprocess.Popen) -> None:
        """Until its 0.3 s of CPU are spent (a fixed sleep is too short on a busy machine)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            times = psutil.Process(proc.pid).cpu_times()
            if times.user + times.system >= 0.3 and psutil.Process(proc.pid).status() == psutil.STATUS_SLEEPING:
                return
            time.sleep(0.05)
        raise AssertionError("the burner did not finish its CPU in 30 s")

    old = subprocess.Popen([sys.executable, "-c", burn])
    young = None
    try:
        burned(old)  # the old one has burned its 0.3 s before the window
        sampler = harness.RssSampler()
        sampler.reset()
        sampler.watch("old", old.pid)
        sampler.sample(walk=True)
        young = subprocess.Popen([sys.executable, "-c", burn])
        burned(young)  # burned before anyone saw it
        sampler.watch("young", young.pid)
        snap = sampler.snapshot()
        assert snap["young"]["cpu_s"] >= 0.25
        assert snap["old"].get("cpu_s", 0.0) < 0.1
    finally:
        for p in (old, young):
            if p is not None:
                p.kill()
                p.wait()


def test_the_commit_is_read_in_a_clone_and_in_a_worktree(tmp_path: Any) -> None:
    from bench.report import _git_commit

    sha, other = "a" * 40, "b" * 40
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git" / "refs" / "heads" / "main").write_text(sha + "\n")
    (repo / ".git" / "packed-refs").write_text(f"# pack-refs\n{other} refs/heads/bench19\n")
    assert _git_commit(repo) == sha
    # A worktree: .git is a file naming its git dir, whose branch ref is packed in the main repository.
    wt_git = repo / ".git" / "worktrees" / "bench19"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/bench19\n")
    (wt_git / "commondir").write_text("../..\n")
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {wt_git}\n")
    assert _git_commit(wt) == other
    assert _git_commit(tmp_path / "nowhere") is None


def test_a_process_started_in_the_tick_of_the_reset_counts_as_born_in_the_window() -> None:
    """/proc counts start times in clock ticks, rounded down: started in the reset's own tick, a process
    reads as up to one tick older than the reset, and must still be charged from birth."""
    import subprocess
    import sys

    import psutil

    from bench import harness

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = harness.started_since_boot(proc.pid)
        assert started is not None
        sampler = harness.RssSampler()
        sampler.reset_at = started + 0.5 / harness.CLK_TCK  # the reset, later in the same tick
        assert sampler._born_since_reset(psutil.Process(proc.pid))
        sampler.reset_at = started + 2.0 / harness.CLK_TCK  # two ticks later: older than the window
        assert not sampler._born_since_reset(psutil.Process(proc.pid))
    finally:
        proc.kill()
        proc.wait()
