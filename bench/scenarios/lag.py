"""Receipt-to-materialized lag, measured two ways (the harness's own polled sample and the
pipeline's histogram); shared by the latency and backfill scenarios."""
from __future__ import annotations

import threading
import time
from typing import Any

from bench import loadgen
from bench.harness import OUR_PG_TABLE, OUR_PREFIX, Bench
from bench.scenarios.common import TARGETS


class LagSampler:
    """Harness-side cross-check: every ``every``-th event is polled for in Redis and PostgreSQL
    (every 50 ms; every 250 ms while more than 100 are outstanding) from a thread of its own, with
    its own connections, from the first send until ``finish``; the first-seen time minus the
    scheduled send time is its lag (so it includes the HTTP request and up to one poll interval)."""

    def __init__(self, bench: Bench, every: int = 10) -> None:
        import psycopg2
        import redis

        self.every = every
        self.i = 0
        self.sent: dict[str, float] = {}
        self.pending: dict[str, set[str]] = {"redis": set(), "postgres": set()}
        # (seconds from the sampler's start to the event's send, lag) per target: lag over time.
        self.timeline: dict[str, list[tuple[float, float]]] = {"redis": [], "postgres": []}
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.cache = redis.Redis.from_url(bench.env["SOPHIA_REDIS_URL"])
        self.pg = psycopg2.connect(bench.env["SOPHIA_POSTGRES_DSN"])
        self.pg.autocommit = True
        self.thread = threading.Thread(target=self._loop, name="lag-sampler", daemon=True)

    def start(self) -> "LagSampler":
        self.thread.start()
        return self

    def on_sent(self, cid: str, scheduled: float) -> None:
        self.i += 1
        if self.i % self.every == 0:
            self.sent[cid] = scheduled

    def on_done(self, cid: str, status: int, _t: float) -> None:
        if cid in self.sent and status == 202:
            with self.lock:
                for t in self.pending:
                    self.pending[t].add(cid)

    def poll_once(self) -> None:
        now = time.monotonic()
        with self.lock:
            ids = list(self.pending["redis"])
            pg_ids = list(self.pending["postgres"])
        found_r: list[str] = []
        if ids:
            pipe = self.cache.pipeline(transaction=False)
            for cid in ids:
                pipe.exists(OUR_PREFIX + cid)
            found_r = [cid for cid, hit in zip(ids, pipe.execute(), strict=True) if hit]
        found_p: list[str] = []
        if pg_ids:
            try:
                with self.pg.cursor() as cur:
                    cur.execute(f"SELECT call_id FROM {OUR_PG_TABLE} WHERE call_id = ANY(%s)", (pg_ids,))
                    found_p = [r[0] for r in cur.fetchall()]
            except Exception:  # the table is created by the first batch
                found_p = []
        with self.lock:
            for t, found in (("redis", found_r), ("postgres", found_p)):
                for cid in found:
                    if cid in self.pending[t]:
                        self.pending[t].discard(cid)
                        self.timeline[t].append((self.sent[cid] - self.t0, now - self.sent[cid]))

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                self.poll_once()
            except Exception:
                pass
            with self.lock:
                backlog = max(len(p) for p in self.pending.values())
            self.stopped.wait(0.05 if backlog < 100 else 0.25)

    def finish(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not any(self.pending.values()):
                    break
            time.sleep(0.05)
        self.stopped.set()
        self.thread.join(5)
        self.pg.close()

    def summary(self, window_s: float = 30.0) -> dict[str, Any]:
        """Quantiles of every sampled lag, and per ``window_s`` of send time (when the lag grew)."""
        out = {}
        for t, timeline in self.timeline.items():
            lags = [lag for _, lag in timeline]
            out[t] = {"samples": len(lags), "missing": len(self.pending[t]),
                      "p50_s": _r3(loadgen.percentile(lags, 0.5)), "p95_s": _r3(loadgen.percentile(lags, 0.95)),
                      "p99_s": _r3(loadgen.percentile(lags, 0.99)), "max_s": _r3(max(lags) if lags else None),
                      "windows": lag_windows(timeline, window_s)}
        return out


def lag_windows(timeline: list[tuple[float, float]], window_s: float) -> list[dict[str, Any]]:
    """(send offset, lag) pairs as one row per window of send time: its start, count, p50, p99, max."""
    by_window: dict[int, list[float]] = {}
    for sent, lag in timeline:
        by_window.setdefault(int(sent // window_s), []).append(lag)
    return [{"from_s": round(w * window_s, 1), "n": len(lags), "p50_s": _r3(loadgen.percentile(lags, 0.5)),
             "p99_s": _r3(loadgen.percentile(lags, 0.99)), "max_s": _r3(max(lags))}
            for w, lags in sorted(by_window.items())]


def _r3(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def lag_histogram(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Quantiles of receipt-to-materialized lag per target from the pipeline's own histogram
    (``lag_seconds_bucket|le=..|target=..`` in the cache Redis), as after-minus-before deltas."""
    from sophia_tasks.observe.counts import quantile
    from sophia_tasks.observe.stats import LAG_BUCKETS, parse_field

    per: dict[str, dict[str, Any]] = {t: {"buckets": {}, "count": 0.0, "sum": 0.0} for t in TARGETS}
    for key in set(before) | set(after):
        name, labels = parse_field(key)
        t = labels.get("target")
        if t not in per:
            continue
        delta = after.get(key, 0.0) - before.get(key, 0.0)
        if name == "lag_seconds_bucket":
            per[t]["buckets"][float(labels["le"])] = delta
        elif name == "lag_seconds_count":
            per[t]["count"] = delta
        elif name == "lag_seconds_sum":
            per[t]["sum"] = delta
    out = {}
    for t, d in per.items():
        count = d["count"]
        buckets = [(le, d["buckets"].get(le, 0.0)) for le in LAG_BUCKETS]
        within = {str(le): round(c / count, 4) for le, c in buckets if le <= 5.0} if count else {}
        out[t] = {
            "count": int(count),
            "mean_s": round(d["sum"] / count, 3) if count else None,
            "p50_s": quantile(buckets, count, 0.50),
            "p95_s": quantile(buckets, count, 0.95),
            "p99_s": quantile(buckets, count, 0.99),
            "share_within_s": within,
        }
    return out
