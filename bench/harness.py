"""The benchmark's own stack: real processes on benchmark-only databases and ports.

Redis db 14 is the broker and db 15 the cache (override with ``--broker-db``/``--cache-db``),
PostgreSQL database ``sophia_bench``, the Snowflake emulator on a free port with a fresh
data directory, the web app (granian, or gunicorn with --web-server) and the floor apps on free ports. Nothing here
touches the demo's or the test suites' data (tests use Redis dbs 2-11 and ``sophia_test*``).

Processes are started through ``sophia_tasks.dev.stack.Stack``, the same code the demo and the
integration tests use, so the benchmark measures the processes the Procfile runs.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psycopg2
import redis

from sophia_tasks.dev.stack import BIN, Process, Stack, free_port, web_server_command

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "sophia_bench"
OUR_PREFIX = "sophia:gong_calls_enriched:"
OUR_PG_TABLE = "gong_calls_enriched"
OUR_SF_TABLE = "GONG_CALLS_ENRICHED"
SF_DATABASE = "SOPHIA_BENCH"
#: The servers the floor app runs under, and the process name of each (``Bench.start_floor``).
FLOOR_SERVERS = {"gunicorn": "floor", "granian": "floor-granian"}
#: The floor app under the web's own server and settings (``python -m web.serve``): the reads' "same server".
SAME_SERVER = "web-serve"
#: Every server the floor app runs under, and its process name.
FLOOR_NAMES = {**FLOOR_SERVERS, SAME_SERVER: "floor-web"}


def bench_env(workdir: Path, broker_db: int, cache_db: int, token: str, read_token: str) -> dict[str, str]:
    return {
        "SOPHIA_BROKER_URL": f"redis://127.0.0.1:6379/{broker_db}",
        "SOPHIA_REDIS_URL": f"redis://127.0.0.1:6379/{cache_db}",
        "SOPHIA_POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:5432/{BENCH_DB}",
        "SOPHIA_SNOWFLAKE_PORT": str(free_port()),
        "SOPHIA_SNOWFLAKE_DATA_DIR": str(workdir / "snowflake"),
        "SOPHIA_SNOWFLAKE_DATABASE": SF_DATABASE,
        "PORT": str(free_port()),
        "SOPHIA_WEBHOOK_TOKENS": token,
        "SOPHIA_READ_TOKENS": read_token,  # the documents read (reads scenario)
        # Everything else (batch size, flush interval, body limit, retries) keeps the production defaults.
    }


class BenchLock:
    """One benchmark at a time on a machine: they would share db 14/15 and the database."""

    def __init__(self, path: str = "/tmp/sophia-bench.lock") -> None:
        self.handle = open(path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit("another benchmark run holds /tmp/sophia-bench.lock") from None


# -- memory ------------------------------------------------------------------------------
@dataclass
class Peak:
    tree_mb: float = 0.0        # the process and all its children, summed
    max_process_mb: float = 0.0  # the largest single process in the tree
    processes: int = 0


def tree_procs(pid: int | None) -> list[Any]:
    """The processes of the tree rooted at ``pid`` (empty if it is gone)."""
    import psutil

    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def cpu_seconds(procs: list[Any]) -> float:
    """User + system CPU seconds of ``procs`` (those still alive)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except Exception:
            continue
        total += t.user + t.system
    return total


def service_procs(names: tuple[str, ...]) -> list[Any]:
    import psutil

    return [p for p in psutil.process_iter(["name"]) if (p.info.get("name") or "") in names]


def rss_mb(procs: list[Any]) -> list[float]:
    """RSS in MB of each of ``procs`` still alive."""
    import psutil

    sizes = []
    for p in procs:
        try:
            sizes.append(p.memory_info().rss / 1e6)
        except psutil.Error:
            pass
    return sizes


def tree_rss_mb(pid: int | None) -> list[float]:
    """RSS in MB of each process of the tree rooted at ``pid`` (empty if it is gone)."""
    return rss_mb(tree_procs(pid))


def since_boot() -> float:
    """Seconds since boot, the clock of a process's start time.

    Why not ``time.time()`` against ``psutil.Process.create_time()``: psutil adds the boot time, which
    Linux gives in whole seconds, so a process started just after a wall-clock instant can appear
    to have started up to a second before it.
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME)


#: The kernel's clock ticks per second: the unit of a process's start time in /proc.
CLK_TCK = os.sysconf("SC_CLK_TCK")


def started_since_boot(pid: int) -> float | None:
    """When ``pid`` started, in seconds since boot, from ``/proc/<pid>/stat`` (None elsewhere).

    Why not psutil's ``create_time() - boot_time()``: both are wall-clock figures, and ``boot_time()``
    is read again at each call from ``/proc/stat``, whose boot time moves when the wall clock is
    adjusted, while ``create_time()`` uses the value psutil read at import: the difference was off
    by up to a second, enough to take a process born in the window for an older one.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        return int(fields[19]) / CLK_TCK  # field 22, starttime, in clock ticks
    except (OSError, ValueError, IndexError):
        return None


class RssSampler(threading.Thread):
    """Samples the RSS of named process trees every ``interval`` seconds; keeps peaks per window."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.interval = interval
        self.roots: dict[str, int] = {}
        self.peaks: dict[str, Peak] = {}
        # (tree or service, pid) -> CPU seconds at the first and the last sample since the reset.
        self.cpu_first: dict[tuple[str, int], float] = {}
        self.cpu_last: dict[tuple[str, int], float] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        # The processes found by the last walk of the process table, and when and for which roots.
        self._trees: dict[str, list[Any]] = {}
        self._services: dict[str, list[Any]] = {}
        self._walked_roots: dict[str, int] | None = None
        self._walked_at = 0.0
        self._me: Any = None
        self.reset_at = since_boot()

    #: Seconds between walks of the process table. A walk (every tree's children, every process's
    #: name) cost 17-25 ms of CPU here: at every 0.25 s sample that was 7-10 % of a core taken from
    #: the stack under test. Samples between walks read only the processes the last walk found; a
    #: new root (a restarted worker) is walked at once.
    REFRESH_S = 2.0

    def members(self, force: bool = False) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """The processes of each watched tree and of each service, walked at most every ``REFRESH_S``."""
        import psutil

        with self.lock:
            roots = dict(self.roots)
        now = time.monotonic()
        if force or roots != self._walked_roots or now - self._walked_at >= self.REFRESH_S:
            trees = {name: tree_procs(pid) for name, pid in roots.items()}
            services: dict[str, list[Any]] = {k: [] for k in (*self.SERVICES, BENCH_BACKENDS)}
            for p in psutil.process_iter(["name"]):
                for service, names in self.SERVICES.items():
                    if (p.info.get("name") or "") in names:
                        services[service].append(p)
                        if service == "postgres" and is_bench_backend(p):
                            services[BENCH_BACKENDS].append(p)
            self._trees, self._services = trees, services
            self._walked_roots, self._walked_at = roots, now
        return self._trees, self._services

    def watch(self, name: str, pid: int) -> None:
        with self.lock:
            self.roots[name] = pid

    def unwatch(self, name: str) -> None:
        with self.lock:
            self.roots.pop(name, None)

    def reset(self) -> None:
        with self.lock:
            self.peaks = {}
            self.cpu_first = {}
            self.cpu_last = {}
            self.reset_at = since_boot()

    #: Shared services and the benchmark itself, whose CPU is reported beside the stack's trees.
    SERVICES = {"postgres": ("postgres",), "redis": ("redis-server",)}

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Peak RSS per tree, and CPU seconds per tree and service since the last reset (sampled
        every ``interval``, with the process table walked every ``REFRESH_S``: a process that lived
        less than that is missed)."""
        self.sample(walk=True)
        with self.lock:
            out: dict[str, dict[str, float]] = {
                k: {"peak_tree_rss_mb": round(p.tree_mb, 1), "peak_process_rss_mb": round(p.max_process_mb, 1),
                    "processes": p.processes} for k, p in self.peaks.items()}
            cpu: dict[str, float] = {}
            for (name, pid), last in self.cpu_last.items():
                cpu[name] = cpu.get(name, 0.0) + last - self.cpu_first.get((name, pid), last)
        for name, seconds in cpu.items():
            out.setdefault(name, {})["cpu_s"] = round(seconds, 2)
        return out

    def _cpu(self, name: str, procs: list[Any]) -> None:
        for p in procs:
            try:
                t = p.cpu_times()
            except Exception:
                continue
            key = (name, p.pid)
            if key not in self.cpu_first and self._born_since_reset(p):
                # Started inside the window (a pool child's database connection, a restarted
                # worker): all its CPU is the window's, also what it used before it was first seen.
                with self.lock:
                    self.cpu_first.setdefault(key, 0.0)
            with self.lock:
                self.cpu_first.setdefault(key, t.user + t.system)
                self.cpu_last[key] = t.user + t.system

    def _born_since_reset(self, proc: Any) -> bool:
        started = started_since_boot(proc.pid)
        if started is None:  # not Linux's /proc: psutil's wall-clock start time
            import psutil

            try:
                started = proc.create_time() - psutil.boot_time()
            except Exception:
                return False
            return started >= self.reset_at
        # The start time is counted in clock ticks (10 ms), rounded down: a process started in the
        # tick of the reset reads as up to one tick earlier. One born in the tick before is charged
        # the little CPU it used before the reset.
        return started + 1 / CLK_TCK >= self.reset_at

    def sample(self, walk: bool = False) -> None:
        import psutil

        trees, services = self.members(force=walk)
        for name, procs in trees.items():
            self._cpu(name, procs)
            sizes = rss_mb(procs)
            if not sizes:
                continue
            with self.lock:
                peak = self.peaks.setdefault(name, Peak())
                peak.tree_mb = max(peak.tree_mb, sum(sizes))
                peak.max_process_mb = max(peak.max_process_mb, max(sizes))
                peak.processes = max(peak.processes, len(sizes))
        for service, procs in services.items():
            self._cpu(service, procs)
        if self._me is None:
            self._me = psutil.Process()
        self._cpu("bench (load generator)", [self._me])

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.sample()
            except Exception:
                pass


#: The PostgreSQL backends connected to the benchmark's database: the part of "postgres" that is
#: surely ours on a machine where other databases are busy (the server's own processes, WAL writer
#: and checkpointer, are in "postgres" only).
BENCH_BACKENDS = "postgres (sophia_bench backends)"


def is_bench_backend(proc: Any) -> bool:
    """A backend's title is ``postgres: <user> <database> <client> <state>``."""
    try:
        title = " ".join(proc.cmdline())
    except Exception:
        return False
    return f" {BENCH_DB} " in title


# -- the stack ---------------------------------------------------------------------------
@dataclass
class Bench:
    workdir: Path
    broker_db: int = 14
    cache_db: int = 15
    web_workers: int = 2
    web_threads: int = 4
    #: The web's server: ``granian`` (the Procfile's ``python -m web.serve``) or ``gunicorn`` (deploy/gunicorn.conf.py).
    web_server: str = "granian"
    worker_concurrency: int = 6
    token: str = field(default_factory=lambda: "bench-" + uuid.uuid4().hex[:16])
    read_token: str = field(default_factory=lambda: "bench-read-" + uuid.uuid4().hex[:16])

    def __post_init__(self) -> None:
        self.env = bench_env(self.workdir, self.broker_db, self.cache_db, self.token, self.read_token)
        self.stack = Stack.from_env(self.env, self.workdir / "logs")
        self.cache = redis.Redis.from_url(self.env["SOPHIA_REDIS_URL"])
        self.broker = redis.Redis.from_url(self.env["SOPHIA_BROKER_URL"])
        self.rss = RssSampler()
        #: One port per server the floor app runs under (``start_floor``).
        self.floor_ports = {server: free_port() for server in (*FLOOR_SERVERS, SAME_SERVER)}
        self.floor_port = self.floor_ports["gunicorn"]
        self._sf: Any = None
        self._starts = 0

    # -- lifecycle -------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Empty the benchmark's own Redis dbs, database and emulator data; nothing else."""
        self.broker.flushdb()
        self.cache.flushdb()
        conn = psycopg2.connect(PG_ADMIN)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (BENCH_DB,))
            cur.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}"')
            cur.execute(f'CREATE DATABASE "{BENCH_DB}"')
        conn.close()
        shutil.rmtree(self.env["SOPHIA_SNOWFLAKE_DATA_DIR"], ignore_errors=True)

    def start(self) -> None:
        os.environ.update(self.env)  # the harness's own clients (settings, naive app) read the same values
        self.rss.start()
        proc = self.stack.start_snowflake(Path(self.env["SOPHIA_SNOWFLAKE_DATA_DIR"]))
        if proc is not None:
            self.rss.watch("snowflake", proc.popen.pid)

    def close(self) -> None:
        self.rss.stopped.set()
        if self._sf is not None:
            try:
                self._sf.close()
            except Exception:
                pass
        self.stack.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    @property
    def floor_url(self) -> str:
        return f"http://127.0.0.1:{self.floor_port}"

    @property
    def same_server_floor(self) -> str:
        """The floor server that is the web's own: the reads compare the two on one server."""
        return "gunicorn" if self.web_server == "gunicorn" else SAME_SERVER

    def start_web(self) -> Process:
        if "web" not in self.stack.processes:
            proc = self.stack.start_web(workers=self.web_workers, threads=self.web_threads, server=self.web_server)
            self.rss.watch("web", proc.popen.pid)
        return self.stack.processes["web"]

    def floor_url_of(self, server: str) -> str:
        return f"http://127.0.0.1:{self.floor_ports[server]}"

    def start_floor(self, server: str = "gunicorn") -> Process:
        """The floor app (bench/floor_app.py) on its own port, under ``server``:

        * ``gunicorn``: exactly the web's gunicorn settings (deploy/gunicorn.conf.py, same
          ``--workers`` and ``--threads``), process name ``floor``;
        * ``granian``: ``granian --interface wsgi --workers <web workers>`` (granian's own defaults otherwise),
          process name ``floor-granian``;
        * ``web-serve``: the web's own server and settings (``python -m web.serve``, same workers and
          threads), process name ``floor-web``.

        Returns once the app answers a request (a server's port can open before its workers run).
        """
        name = FLOOR_NAMES[server]
        if name in self.stack.processes:
            return self.stack.processes[name]
        port = self.floor_ports[server]
        extra: dict[str, str] = {}
        if server in ("gunicorn", SAME_SERVER):
            argv, extra = web_server_command("gunicorn" if server == "gunicorn" else "granian", self.web_workers,
                                             self.web_threads, "bench.floor_app:create_app")
        else:
            exe = BIN / "granian"
            if not exe.exists():
                raise RuntimeError(f"granian is not installed in {BIN.parent}: pip install -r bench/requirements.txt")
            argv = [str(exe), "--interface", "wsgi", "--workers", str(self.web_workers), "--host", "127.0.0.1",
                    "--port", str(port), "--no-ws", "--factory", "bench.floor_app:create_app"]
        proc = self.stack.spawn(name, argv, extra_env={**extra, "PORT": str(port),
                                                       "BENCH_FLOOR_REDIS_URL": self.env["SOPHIA_REDIS_URL"],
                                                       "BENCH_FLOOR_KEY_PREFIX": OUR_PREFIX})
        from sophia_tasks.dev.stack import wait_for

        wait_for(lambda: answers(self.floor_url_of(server) + "/floor/documents/none"), 60, f"floor app ({server})",
                 proc.popen, proc.log_path)
        time.sleep(0.5)  # every worker up before anyone reads the tree's CPU
        self.rss.watch(name, proc.popen.pid)
        return proc

    def server_cpu(self, name: str) -> Callable[[], float]:
        """Reads the CPU seconds of the ``name`` tree (its server's main process and workers) plus the
        Redis server's: what serving a request costs on the machine, whichever app it is."""
        root = self.stack.processes[name].popen.pid
        procs = tree_procs(root) + service_procs(("redis-server",))  # the servers keep their workers

        def read() -> float:
            return cpu_seconds(procs)

        return read

    def stop(self, name: str) -> None:
        self.rss.unwatch(name)
        self.stack.stop(name)

    def start_worker(self, on_ready: Callable[[float], None] | None = None) -> tuple[Process, float, float]:
        """Start the pipeline worker; (process, spawn time, ready time) on ``time.monotonic``.

        ``Stack.start_worker`` polls its log every 100 ms; the ready time here is read every
        5 ms from the same log, so a drain is timed from when the worker could first consume.
        """
        return self._start_timed("worker", lambda name: self.stack.start_worker(
            name=name, concurrency=self.worker_concurrency))

    def start_naive_worker(self) -> tuple[Process, float, float]:
        def spawn(name: str) -> Process:
            from sophia_tasks.dev.stack import wait_for

            argv = [str(BIN / "celery"), "-A", "bench.naive", "worker", "--loglevel", "INFO", "--concurrency",
                    str(self.worker_concurrency), "-n", f"{name}@%h", "-Q", "naive", "--without-mingle",
                    "--without-gossip"]
            proc = self.stack.spawn(name, argv)
            wait_for(lambda: b"ready." in proc.log_path.read_bytes(), 60, f"celery {name}", proc.popen,
                     proc.log_path)
            return proc

        return self._start_timed("naive", spawn)

    def _start_timed(self, role: str, spawn: Callable[[str], Process]) -> tuple[Process, float, float]:
        self._starts += 1
        name = f"{role}-{self._starts}"  # a fresh log file, so "ready." is this start's
        log = self.stack.workdir / f"{name}.log"
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["proc"] = spawn(name)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                box["error"] = exc

        t_spawn = time.monotonic()
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        t_ready = None
        while thread.is_alive() or t_ready is None:
            try:
                if b"ready." in log.read_bytes():
                    t_ready = time.monotonic()
                    break
            except FileNotFoundError:
                pass
            if not thread.is_alive() and "error" in box:
                break
            time.sleep(0.005)
        thread.join()
        if "error" in box:
            raise box["error"]
        proc = box["proc"]
        self.rss.watch(role, proc.popen.pid)
        return proc, t_spawn, t_ready if t_ready is not None else time.monotonic()

    def stop_role(self, role: str) -> None:
        """Stop every started process of a role (``worker``, ``naive``): warm shutdown, then the group."""
        for name in [n for n in self.stack.processes if n.startswith(role + "-")]:
            self.stack.stop(name)
        self.rss.unwatch(role)

    def pid_of(self, role: str) -> int | None:
        names = [n for n in self.stack.processes if n.startswith(role + "-")]
        return self.stack.processes[names[-1]].popen.pid if names else None

    # -- targets ---------------------------------------------------------------------------
    def redis_count(self, prefix: str = OUR_PREFIX, ids: str = "") -> int:
        n = 0
        for _ in self.cache.scan_iter(match=f"{prefix}{ids}*", count=5000):
            n += 1
        return n

    def redis_present(self, call_ids: list[str], prefix: str = OUR_PREFIX, chunk: int = 10_000) -> int:
        """How many of these calls' documents exist: one EXISTS per ``chunk`` keys, pipelined."""
        pipe = self.cache.pipeline(transaction=False)
        for i in range(0, len(call_ids), chunk):
            pipe.exists(*[prefix + cid for cid in call_ids[i:i + chunk]])
        return sum(int(n) for n in pipe.execute()) if call_ids else 0

    def pg(self) -> Any:
        if getattr(self, "_pg", None) is None or self._pg.closed:
            self._pg = psycopg2.connect(self.env["SOPHIA_POSTGRES_DSN"])
            self._pg.autocommit = True
        return self._pg

    def pg_count(self, table: str = OUR_PG_TABLE, ids: str = "") -> int:
        with self.pg().cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (table,))
            if cur.fetchone()[0] is None:
                return 0
            if ids:
                cur.execute(f"SELECT count(*) FROM {table} WHERE call_id LIKE %s", (ids + "%",))
            else:
                cur.execute(f"SELECT count(*) FROM {table}")
            return int(cur.fetchone()[0])

    def sf(self) -> Any:
        if self._sf is None or self._sf.is_closed():
            import snowflake.connector

            from sophia_tasks.materializers.snowflake import prepare_connector
            from sophia_tasks.settings import load_settings

            sf = load_settings(self.env).snowflake
            # The raw rates are measured with the transport the materializer uses (its gzip level:
            # the connector's own default, level 9, would slow the raw inserts and flatter the ratio).
            prepare_connector(sf)
            conn = snowflake.connector.connect(**sf.connect_kwargs())
            cur = conn.cursor()
            cur.execute(f'CREATE DATABASE IF NOT EXISTS "{sf.database}"')
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{sf.database}"."{sf.schema}"')
            cur.execute(f'USE SCHEMA "{sf.database}"."{sf.schema}"')
            self._sf = conn
        return self._sf

    def sf_count(self, table: str = OUR_SF_TABLE, ids: str = "") -> int:
        cur = self.sf().cursor()
        try:
            if ids:
                cur.execute(f'SELECT COUNT(*) FROM "{table}" WHERE "CALL_ID" LIKE ?', [ids + "%"])
            else:
                cur.execute(f'SELECT COUNT(*) FROM "{table}"')
        except Exception as exc:
            if "does not exist" in str(exc):
                return 0
            raise
        return int(cur.fetchone()[0])

    def clear_targets(self) -> None:
        """Empty every target (ours and the naive baseline's) and the dedupe store between scenarios."""
        self.cache.flushdb()
        with self.pg().cursor() as cur:
            for table in (OUR_PG_TABLE, "naive_gong_calls_enriched", "sophia_dead_letters"):
                cur.execute("SELECT to_regclass(%s)", (table,))
                if cur.fetchone()[0] is not None:
                    cur.execute(f"TRUNCATE {table}")
        for table in (OUR_SF_TABLE, "NAIVE_GONG_CALLS_ENRICHED", "RAW_INSERT_BENCH"):
            try:
                self.sf().cursor().execute(f'DELETE FROM "{table}"')
            except Exception as exc:
                if "does not exist" not in str(exc):
                    raise

    def queue_length(self, queue: str) -> int:
        """Messages in ``queue``; for the ingest queue, plus the events in the ingest buffer."""
        n = int(self.broker.llen(queue))
        if queue.endswith("sophia.ingest"):
            from sophia_tasks.ingest.buffer import BUFFER_PREFIX

            n += int(self.broker.llen(BUFFER_PREFIX + queue))
        return n

    def dead_letters(self) -> int:
        with self.pg().cursor() as cur:
            cur.execute("SELECT to_regclass('sophia_dead_letters')")
            if cur.fetchone()[0] is None:
                return 0
            cur.execute("SELECT count(*) FROM sophia_dead_letters")
            return int(cur.fetchone()[0])


def answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` at all (any status)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def kill_tree_on_exit(bench: Bench) -> None:
    """Ctrl-C stops what the benchmark started (and nothing else)."""

    def handler(signum: int, frame: Any) -> None:
        bench.close()
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, handler)


def calibrate(rounds: int = 3) -> float:
    """Milliseconds of CPU a fixed pure-Python workload takes here, the best of ``rounds``.

    Why: the benchmark machines are virtual and share their host. The same loop took 0.23 s and 0.70 s
    within minutes on one of them, with the load average near zero, so a CPU figure means little
    without the machine's speed beside it. Recorded before and after each scenario.
    """
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        acc, words = 0, {}
        for i in range(300_000):
            acc += i * i % 7
            words[str(i % 1000)] = acc
        best = min(best, time.process_time() - t0)
    return round(1000 * best, 1)
