"""Serve the web app under granian: ``python -m web.serve`` (the Procfile's ``web``).

Why granian, not gunicorn: on this project's 2-core benchmark the same app answered the webhook
with less CPU per request under granian (its HTTP parsing, keep-alive and socket writes are in
Rust, off the GIL) and with a shorter tail on reads; ``docs/benchmarks.md`` has the figures.
What gunicorn gave is kept:

* graceful shutdown: on SIGTERM or SIGINT the workers stop accepting, finish the requests in
  flight and exit; one still busy after ``SOPHIA_WEB_GRACEFUL_SECONDS`` (20) is killed;
* the body limit before reading: granian hands the body to the app as a stream, and the app
  answers 413 on ``Content-Length`` before reading, or stops reading one byte past the limit;
* the threads: ``WEB_THREADS`` (4) blocking threads per worker run the WSGI app, ``WEB_CONCURRENCY``
  (2) worker processes;
* loopback unless ``SOPHIA_BIND_ALL=1``; ``PORT`` (9009); an access log only with ``SOPHIA_ACCESS_LOG``
  (``-``: standard output, else a file), in a format without headers, so without a credential;
* TLS when ``SOPHIA_WEB_TLS_CERT`` and ``SOPHIA_WEB_TLS_KEY`` name the files.

``deploy/gunicorn.conf.py`` still serves the same ``web:create_app()`` for those who prefer it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

#: No credential in the access log: the path and status, never the headers.
ACCESS_LOG_FORMAT = '%(addr)s [%(time)s] "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms'


@dataclass(frozen=True)
class ServeConfig:
    host: str
    port: int
    workers: int
    threads: int
    graceful_seconds: int
    access_log: str | None
    tls_cert: str | None
    tls_key: str | None
    log_level: str

    def granian_kwargs(self) -> dict[str, Any]:
        from granian.constants import Interfaces
        from granian.log import LogLevels

        kwargs: dict[str, Any] = {
            "address": self.host, "port": self.port, "interface": Interfaces.WSGI, "factory": True,
            "workers": self.workers, "blocking_threads": self.threads, "websockets": False,
            "workers_kill_timeout": self.graceful_seconds, "respawn_failed_workers": True,
            "log_access": bool(self.access_log), "log_access_format": ACCESS_LOG_FORMAT,
            "log_level": LogLevels(self.log_level),
        }
        if self.access_log and self.access_log != "-":  # a file, as gunicorn's accesslog took
            import copy

            from granian.log import LOGGING_CONFIG

            config = copy.deepcopy(LOGGING_CONFIG)  # granian replaces whole sections: give them all
            config["handlers"]["access"] = {"formatter": "access", "class": "logging.FileHandler",
                                            "filename": self.access_log}
            kwargs["log_dictconfig"] = config
        if self.tls_cert and self.tls_key:
            kwargs["ssl_cert"] = Path(self.tls_cert)
            kwargs["ssl_key"] = Path(self.tls_key)
        return kwargs


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes"}


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SystemExit(f"{name}={value} must be at least {minimum}")
    return value


def config_from(env: Mapping[str, str]) -> ServeConfig:
    level = (env.get("SOPHIA_LOG_LEVEL") or "info").strip().lower()
    cert, key = env.get("SOPHIA_WEB_TLS_CERT") or None, env.get("SOPHIA_WEB_TLS_KEY") or None
    if bool(cert) != bool(key):
        raise SystemExit("set both SOPHIA_WEB_TLS_CERT and SOPHIA_WEB_TLS_KEY, or neither")
    return ServeConfig(
        host="0.0.0.0" if _flag(env.get("SOPHIA_BIND_ALL")) else "127.0.0.1",  # noqa: S104 - opt-in
        port=_int(env, "PORT", 9009, minimum=0),
        workers=_int(env, "WEB_CONCURRENCY", 2),
        threads=_int(env, "WEB_THREADS", 4),
        graceful_seconds=_int(env, "SOPHIA_WEB_GRACEFUL_SECONDS", 20),
        access_log=env.get("SOPHIA_ACCESS_LOG") or None,
        tls_cert=cert, tls_key=key,
        log_level=level if level in {"critical", "error", "warning", "warn", "info", "debug"} else "info",
    )


APP = "web:create_app"


def main(argv: list[str] | None = None) -> None:
    """Serve ``web:create_app`` (or another WSGI factory, ``module:factory``: the benchmark serves its
    floor app with exactly these settings)."""
    from granian.server import Server

    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else APP
    config = config_from(os.environ)
    if target == APP:
        # Fail here, once, on a bad setting or flow spec, rather than in every worker as it starts.
        from web import create_app

        create_app()
    Server(target, **config.granian_kwargs()).serve()


if __name__ == "__main__":
    main()
