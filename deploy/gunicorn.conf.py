"""gunicorn settings for the web process; binds loopback unless SOPHIA_BIND_ALL=1."""
import os

_host = "0.0.0.0" if os.environ.get("SOPHIA_BIND_ALL", "").strip().lower() in {"1", "true", "yes"} else "127.0.0.1"
bind = f"{_host}:{os.environ.get('PORT', '9009')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("SOPHIA_ACCESS_LOG") or None
# No %(u)s: a Basic-auth user part can carry a token.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(L)ss'
loglevel = os.environ.get("SOPHIA_LOG_LEVEL", "info")
# Build the app (and check settings, flow spec) once in the master, then fork.
preload_app = True


def pre_fork(server, worker):  # noqa: ANN001 - gunicorn's hook signature
    """Freeze what the preloaded app allocated (modules, settings, the flow spec) before each fork.

    Why: the cycle collector's full collections otherwise rescan those objects in every worker,
    and touching them un-shares the pages the workers got from the master (Python's documented
    recipe for pre-fork servers, ``gc.freeze``).
    """
    import gc

    gc.freeze()
