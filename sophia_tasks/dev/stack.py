"""Start and stop the local stack (emulator, worker, web) as real processes.

Used by ``make demo``, the integration tests and the benchmark, so all three run
the same processes the Procfile runs, with their own environment.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: "callable[[], bool]", timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready:\n{tail}")
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} was not ready after {timeout:.0f}s\n{tail}")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path
    log_file: IO[bytes]

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            # SIGTERM to the leader only: celery and gunicorn then stop their children
            # themselves (a warm shutdown); SIGKILL goes to the whole group.
            try:
                if sig == signal.SIGKILL:
                    os.killpg(self.popen.pid, sig)
                else:
                    os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        self.log_file.close()

    def kill(self) -> None:
        self.stop(timeout=5, sig=signal.SIGKILL)


@dataclass
class Stack:
    env: dict[str, str]
    workdir: Path
    processes: dict[str, Process] = field(default_factory=dict)

    @classmethod
    def from_env(cls, overrides: Mapping[str, str], workdir: Path) -> "Stack":
        env = dict(os.environ)
        env.update(overrides)
        env.setdefault("PYTHONUNBUFFERED", "1")
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(env=env, workdir=workdir)

    def spawn(self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None) -> Process:
        log_path = self.workdir / f"{name}.log"
        log_file = open(log_path, "ab")
        env = dict(self.env)
        if extra_env:
            env.update(extra_env)
        popen = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        proc = Process(name=name, popen=popen, log_path=log_path, log_file=log_file)
        self.processes[name] = proc
        return proc

    # -- the Procfile processes ---------------------------------------------------------
    @property
    def snowflake_port(self) -> int:
        return int(self.env.get("SOPHIA_SNOWFLAKE_PORT", "8765"))

    @property
    def web_port(self) -> int:
        return int(self.env.get("PORT", "9009"))

    def start_snowflake(self, data_dir: Path | None = None, timeout: float = 60) -> Process | None:
        if port_open("127.0.0.1", self.snowflake_port):
            return None  # someone (the Procfile) already runs it
        data_dir = data_dir or Path(self.env.get("SOPHIA_SNOWFLAKE_DATA_DIR", str(self.workdir / "snowflake")))
        data_dir.mkdir(parents=True, exist_ok=True)
        proc = self.spawn("snowflake", [str(BIN / "fakesnow"), "-s", "-p", str(self.snowflake_port),
                                        "-d", str(data_dir)])
        self._ready_or_stop("snowflake", proc, lambda: port_open("127.0.0.1", self.snowflake_port), timeout,
                            "snowflake emulator")
        return proc

    def start_worker(self, name: str = "worker", concurrency: int = 6, queues: str | None = None,
                     extra_args: list[str] | None = None, timeout: float = 60) -> Process:
        argv = [str(BIN / "celery"), "-A", "sophia_tasks", "worker", "--loglevel", "INFO",
                "--concurrency", str(concurrency), "-n", f"{name}@%h", "-E", "--without-mingle",
                "--without-gossip"]
        if queues:
            argv += ["-Q", queues]
        argv += extra_args or []
        proc = self.spawn(name, argv)
        self._ready_or_stop(name, proc, lambda: b"ready." in proc.log_path.read_bytes(), timeout, f"celery {name}")
        return proc

    def _ready_or_stop(self, name: str, proc: Process, check: "callable[[], bool]", timeout: float,
                       what: str) -> None:
        """A process that never got ready is stopped, so a failed start leaves nothing running."""
        try:
            wait_for(check, timeout, what, proc.popen, proc.log_path)
        except BaseException:
            self.processes.pop(name, None)
            proc.kill()
            raise

    def start_web(self, workers: int = 2, threads: int = 4, timeout: float = 60, server: str = "granian") -> Process:
        """The web app as the Procfile runs it (``python -m web.serve``: granian), or under gunicorn."""
        argv, extra = web_server_command(server, workers, threads)
        proc = self.spawn("web", argv, extra_env=extra)
        self._ready_or_stop("web", proc, lambda: port_open("127.0.0.1", self.web_port), timeout, "web")
        return proc

    def stop(self, name: str | None = None) -> None:
        names = [name] if name else list(reversed(list(self.processes)))
        for n in names:
            proc = self.processes.pop(n, None)
            if proc is not None:
                proc.stop()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def web_server_command(server: str, workers: int, threads: int, factory: str = "web:create_app"
                       ) -> tuple[list[str], dict[str, str]]:
    """How the web's server runs a WSGI app factory (the argv and its environment), with the
    web's own settings: ``granian`` is the Procfile's ``python -m web.serve``, ``gunicorn`` is
    ``deploy/gunicorn.conf.py``. The benchmark serves its floor app the same way."""
    if server == "gunicorn":
        return ([str(BIN / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "--workers", str(workers),
                 "--threads", str(threads), f"{factory}()"], {})
    return [str(BIN / "python"), "-m", "web.serve", factory], {"WEB_CONCURRENCY": str(workers),
                                                               "WEB_THREADS": str(threads)}


def ensure_services() -> None:
    """Start PostgreSQL and Redis if they are down (the machine normally runs them)."""
    if not port_open("127.0.0.1", 6379):
        if shutil.which("redis-server"):
            subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
                            "--save", "", "--appendonly", "no"], check=False)
            wait_for(lambda: port_open("127.0.0.1", 6379), 20, "redis")
    if not port_open("127.0.0.1", 5432):
        clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if clusters and shutil.which("pg_ctlcluster"):
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1], "main", "start"], check=False)
            wait_for(lambda: port_open("127.0.0.1", 5432), 30, "postgres")


if __name__ == "__main__":
    ensure_services()
    missing = [f"{n}:{p}" for n, p in (("redis", 6379), ("postgres", 5432)) if not port_open("127.0.0.1", p)]
    if missing:
        print(f"services not reachable: {', '.join(missing)}", file=sys.stderr)
        sys.exit(1)
    print("redis and postgres are up")
