"""``--profile``: py-spy on the worker tree (a second drain) and on the web's tree (an extra
ingest step), and the summary of its samples; apart, so the measured scenarios read without it."""
from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.calls import Calls
from bench.harness import Bench
from bench.scenarios.common import TARGETS, WEBHOOK, Sizes, headers, log, purge_broker
from bench.scenarios.targets import load_broker, wait_targets
from sophia_tasks.dev.stack import BIN


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

# What a web worker spends CPU on while answering webhook POSTs.
WEB_AREAS: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    ("web workers, all of it", "child", ("",)),
    ("webhook handler (receive)", "child", ("receive (web/webhook.py",)),
    ("  authenticate", "child", ("receive (web/webhook.py", "authenticate (web/auth.py")),
    ("  parse_body (envelope)", "child", ("receive (web/webhook.py", "parse_body (")),
    ("  make_event / normalize_version", "child", ("receive (web/webhook.py", "make_event (")),
    ("  dedupe, count and append (one Redis script)", "child", ("receive (web/webhook.py", "Services.accept (")),
    ("  publish (a broker other than Redis)", "child", ("receive (web/webhook.py", "Services.publish (")),
    ("  answer (response)", "child", ("receive (web/webhook.py", "answer (web/webhook.py")),
    ("Flask wsgi_app (includes the handler)", "child", ("wsgi_app (",)),
    ("request body read (werkzeug stream)", "child", ("LimitedStream.",)),
    ("gunicorn HTTP request parsing (under gunicorn)", "child", ("gunicorn/http/",)),
)


def profile_web(bench: Bench, body: loadgen.BodyFn, opts: dict[str, Any], concurrency: int = 32) -> dict[str, Any]:
    """An extra, unmeasured ingest step with py-spy on the web's tree."""
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
