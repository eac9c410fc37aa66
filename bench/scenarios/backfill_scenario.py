"""backfill: ``sophia-tasks backfill --file`` of N calls with a steady live webhook load beside it."""
from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from typing import Any

import orjson

from bench import loadgen
from bench.calls import Calls
from bench.harness import Bench
from bench.scenarios.common import (
    TARGETS,
    WEBHOOK,
    Sizes,
    headers,
    log,
    log_size,
    purge_broker,
    task_stats,
    worker_name,
)
from bench.scenarios.lag import LagSampler
from bench.scenarios.targets import count_target, next_count_in
from sophia_tasks.dev.stack import BIN


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
