"""A small pure-Python HTTP load generator on aiohttp (asyncio).

* ``closed_loop``: ``concurrency`` connections, each sending its next request as soon as the
  previous answer arrived, for a fixed duration (throughput at a concurrency).
* ``open_loop``: requests scheduled at a fixed rate whatever the server does; response time is
  counted from the *scheduled* send time, so a stalled server shows up as latency instead of
  silently lowering the offered load (no coordinated omission).

Both record the CPU the generator itself used: on a 2-core machine it shares the cores
with the server, and the report says how much.
"""
from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp

BodyFn = Callable[[], tuple[bytes, Any]]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[k]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class LoadResult:
    duration_s: float = 0.0
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # accepted (2xx) requests only
    client_cpu_s: float = 0.0
    first_error: str | None = None

    @property
    def accepted(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "duration_s": round(self.duration_s, 3),
            "sent": self.sent,
            "accepted": self.accepted,
            "accepted_per_s": round(self.accepted / self.duration_s, 1) if self.duration_s else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "first_error": self.first_error,
            "p50_ms": _r(percentile(lat, 0.50)),
            "p95_ms": _r(percentile(lat, 0.95)),
            "p99_ms": _r(percentile(lat, 0.99)),
            "max_ms": _r(max(lat) if lat else None),
            "client_cpu_pct_of_one_core": round(100 * self.client_cpu_s / self.duration_s, 1)
            if self.duration_s else None,
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def session(limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60),
                                 skip_auto_headers=("User-Agent",))


async def _post(sess: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], t0: float,
                res: LoadResult, on_done: Callable[[Any, int, float], None] | None, tag: Any) -> None:
    try:
        async with sess.post(url, data=body, headers=headers) as resp:
            await resp.read()
            status = resp.status
    except Exception as exc:  # connection refused/reset, timeout
        res.errors += 1
        if res.first_error is None:
            res.first_error = f"{type(exc).__name__}: {exc}"[:300]
        return
    t1 = time.monotonic()
    res.statuses[status] = res.statuses.get(status, 0) + 1
    if 200 <= status < 300:
        res.latencies_ms.append((t1 - t0) * 1000.0)
    elif res.first_error is None:
        res.first_error = f"HTTP {status}"
    if on_done is not None:
        on_done(tag, status, t1)


async def closed_loop(url: str, headers: dict[str, str], body: BodyFn, concurrency: int, duration: float,
                      warmup: float = 0.0) -> LoadResult:
    res = LoadResult()
    async with session(concurrency) as sess:
        if warmup > 0:
            await closed_loop_in(sess, url, headers, body, concurrency, warmup, LoadResult())
        cpu0 = _cpu()
        t0 = time.monotonic()
        await closed_loop_in(sess, url, headers, body, concurrency, duration, res)
        res.duration_s = time.monotonic() - t0
        res.client_cpu_s = _cpu() - cpu0
    return res


async def closed_loop_in(sess: aiohttp.ClientSession, url: str, headers: dict[str, str], body: BodyFn,
                         concurrency: int, duration: float, res: LoadResult) -> None:
    deadline = time.monotonic() + duration

    async def one_connection() -> None:
        while time.monotonic() < deadline:
            data, tag = body()
            res.sent += 1
            await _post(sess, url, data, headers, time.monotonic(), res, None, tag)

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))


async def open_loop(url: str, headers: dict[str, str], body: BodyFn, rate: float, duration: float,
                    max_connections: int = 256,
                    on_sent: Callable[[Any, float], None] | None = None,
                    on_done: Callable[[Any, int, float], None] | None = None,
                    stop: Callable[[], bool] | None = None,
                    background: Callable[[], Awaitable[None]] | None = None) -> LoadResult:
    """``rate`` requests/s for ``duration`` s (or until ``stop()`` is true when duration is 0)."""
    res = LoadResult()
    async with session(max_connections) as sess:
        loop_tasks: set[asyncio.Task[None]] = set()
        bg = asyncio.create_task(background()) if background else None
        cpu0 = _cpu()
        start = time.monotonic()
        i = 0
        while True:
            scheduled = start + i / rate
            if duration and scheduled - start >= duration:
                break
            if not duration and stop is not None and stop():
                break
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            data, tag = body()
            res.sent += 1
            if on_sent is not None:
                on_sent(tag, scheduled)
            task = asyncio.create_task(_post(sess, url, data, headers, scheduled, res, on_done, tag))
            loop_tasks.add(task)
            task.add_done_callback(loop_tasks.discard)
            i += 1
        res.duration_s = time.monotonic() - start
        if loop_tasks:
            await asyncio.gather(*list(loop_tasks))
        res.client_cpu_s = _cpu() - cpu0
        if bg is not None:
            bg.cancel()
            try:
                await bg
            except (asyncio.CancelledError, Exception):
                pass
    return res


async def post_batches(url: str, headers: dict[str, str], bodies: list[bytes], concurrency: int = 8) -> LoadResult:
    """Send prepared bodies with ``concurrency`` connections (loading the broker for the drain)."""
    res = LoadResult()
    queue = list(reversed(bodies))
    async with session(concurrency) as sess:
        t0 = time.monotonic()

        async def one_connection() -> None:
            while queue:
                data = queue.pop()
                res.sent += 1
                await _post(sess, url, data, headers, time.monotonic(), res, None, None)

        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
        res.duration_s = time.monotonic() - t0
    return res
