"""A small pure-Python HTTP/1.1 load generator on asyncio protocols.

* ``closed_loop``: ``concurrency`` connections, each sending its next request as soon as the
  previous answer arrived, for a fixed duration (throughput at a concurrency).
* ``open_loop``: requests scheduled at a fixed rate whatever the server does; response time is
  counted from the *scheduled* send time, so a stalled server shows up as latency instead of
  silently lowering the offered load (no coordinated omission).

Both POST by default; ``method="GET"`` sends bodiless GETs, and the body function then answers
the request's path (``(b"/v1/collections/c/documents/42", tag)``) instead of its body.

Both record the CPU the generator itself used: on a 2-core machine it shares the cores
with the server, and the report says how much. Why not aiohttp: its client spent ~0.5 ms
of CPU per request here, a quarter of a core at 500 requests/s taken from the stack it
measures. This client writes a pre-built head and the body on a kept-alive connection and
reads only the status line and Content-Length of the answer (~0.1 ms per request), as
wrk does; a connection the server closed while idle is replaced and the request resent once.
"""
from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

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
    #: CPU seconds the servers used in the measured window (``closed_loop(server_cpu=...)``), else None.
    server_cpu_s: float | None = None
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
            **({"server_cpu_s": round(self.server_cpu_s, 3),
                "server_cpu_ms_per_accepted": round(1000 * self.server_cpu_s / self.accepted, 4)
                if self.accepted else None} if self.server_cpu_s is not None else {}),
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


class _Conn(asyncio.Protocol):
    """One kept-alive connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bool]] | None = None
        self.closed = False
        self.got_bytes = False
        self.last_used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.got_bytes = True
        waiter = self.waiter
        if waiter is None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        try:
            status = int(head[9:12])
        except ValueError:
            self._fail(ConnectionError(f"not an HTTP answer: {head[:60]!r}"))
            return
        length = 0
        i = head.find(b"\r\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r\n", i + 2)
            length = int(head[i + 17:j if j > 0 else None])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        del self.buf[:total]
        self.waiter = None
        if not waiter.done():
            waiter.set_result((status, b"\r\nconnection: close" in head))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError(str(exc) if exc else "connection closed by the server"))


class Client:
    """Kept-alive connections to one host, at most ``limit`` open at once."""

    #: A connection idle this long is closed before use (the server's keep-alive is 5 s).
    IDLE_MAX = 3.0

    def __init__(self, url: str, limit: int, timeout: float = 60.0, method: str = "POST") -> None:
        if method not in ("POST", "GET"):
            raise ValueError(f"method must be POST or GET, not {method!r}")
        self.method = method
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(limit)
        self.timeout = timeout
        self._heads: dict[tuple[int, tuple[tuple[str, str], ...]], bytes] = {}

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()

    def _head(self, length: int, headers: dict[str, str]) -> bytes:
        key = (length, tuple(headers.items()))
        head = self._heads.get(key)
        if head is None:
            lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {length}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            if len(self._heads) < 4096:
                self._heads[key] = head
        return head

    def _get_request(self, path: bytes, headers: dict[str, str]) -> bytes:
        """A GET of ``path`` (the URL's path is the prefix, ``path`` the rest); the headers' part is
        built once, so a request costs one join."""
        key = (-1, tuple(headers.items()))
        tail = self._heads.get(key)
        if tail is None:
            lines = [f"Host: {self.host}:{self.port}"] + [f"{k}: {v}" for k, v in headers.items()
                                                          if k.lower() != "content-type"]
            tail = (" HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            self._heads[key] = tail
        return b"".join((b"GET ", self.path.rstrip("/").encode("latin-1"), path, tail))

    async def _connection(self) -> tuple[_Conn, bool]:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.last_used < self.IDLE_MAX:
                return conn, True
            if conn.transport is not None:
                conn.transport.close()
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, self.host, self.port)
        return conn, False

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """The answer's status; raises on a connection error or a timeout. With ``method="GET"``
        ``body`` is the path below the client's URL and no body is sent."""
        if self.method == "GET":
            request = self._get_request(body, headers)
        else:
            request = self._head(len(body), headers) + body
        async with self.slots:
            for attempt in (1, 2):
                conn, reused = await self._connection()
                conn.got_bytes = False
                conn.waiter = asyncio.get_running_loop().create_future()
                assert conn.transport is not None
                conn.transport.write(request)
                try:
                    status, close = await asyncio.wait_for(conn.waiter, self.timeout)
                except ConnectionResetError:
                    # The server closed a kept-alive connection as we wrote on it: resend once.
                    if reused and not conn.got_bytes and attempt == 1:
                        continue
                    raise
                except BaseException:
                    conn._fail(ConnectionAbortedError("request abandoned"))
                    raise
                if close or conn.closed:
                    if conn.transport is not None:
                        conn.transport.close()
                else:
                    conn.last_used = time.monotonic()
                    self.idle.append(conn)
                return status
        raise AssertionError("unreachable")


def session(url: str, limit: int, method: str = "POST") -> Client:
    return Client(url, limit, method=method)


async def _post(sess: Client, url: str, body: bytes, headers: dict[str, str], t0: float,
                res: LoadResult, on_done: Callable[[Any, int, float], None] | None, tag: Any) -> None:
    try:
        status = await sess.post(body, headers)
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
                      warmup: float = 0.0, server_cpu: Callable[[], float] | None = None,
                      method: str = "POST") -> LoadResult:
    """``server_cpu``: reads the CPU seconds used so far by the processes that serve ``url``; read
    at the start and the end of the measured window (after the warm-up) into ``server_cpu_s``."""
    res = LoadResult()
    async with session(url, concurrency, method) as sess:
        if warmup > 0:
            await closed_loop_in(sess, url, headers, body, concurrency, warmup, LoadResult())
        cpu0 = _cpu()
        server0 = server_cpu() if server_cpu is not None else None
        t0 = time.monotonic()
        await closed_loop_in(sess, url, headers, body, concurrency, duration, res)
        res.duration_s = time.monotonic() - t0
        res.client_cpu_s = _cpu() - cpu0
        if server_cpu is not None and server0 is not None:
            res.server_cpu_s = server_cpu() - server0
    return res


async def closed_loop_in(sess: Client, url: str, headers: dict[str, str], body: BodyFn,
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
                    background: Callable[[], Awaitable[None]] | None = None,
                    method: str = "POST") -> LoadResult:
    """``rate`` requests/s for ``duration`` s (or until ``stop()`` is true when duration is 0)."""
    res = LoadResult()
    async with session(url, max_connections, method) as sess:
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
    async with session(url, concurrency) as sess:
        t0 = time.monotonic()

        async def one_connection() -> None:
            while queue:
                data = queue.pop()
                res.sent += 1
                await _post(sess, url, data, headers, time.monotonic(), res, None, None)

        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
        res.duration_s = time.monotonic() - t0
    return res
