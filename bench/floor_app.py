"""The floor for webhook ingest: a bare Flask app doing one Redis SET per request.

Served by the benchmark under the same gunicorn settings as the real web process
(``-c deploy/gunicorn.conf.py``, same ``--workers`` and ``--threads``), with the same
request bodies, so "our ingest / floor" measures what authentication, parsing, dedupe
and publishing to the broker cost on top of a request that does the minimum any
webhook receiver must do: read the body and write it somewhere durable-ish.

    gunicorn -c deploy/gunicorn.conf.py "bench.floor_app:create_app()"
"""
from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask, jsonify, request


def create_app() -> Flask:
    url = os.environ.get("BENCH_FLOOR_REDIS_URL") or os.environ.get("SOPHIA_REDIS_URL", "redis://127.0.0.1:6379/1")
    app = Flask(__name__)
    state: dict[str, Any] = {"pid": None, "client": None}

    def client() -> redis.Redis:
        # gunicorn preloads then forks: one client per process, never a shared socket.
        if state["pid"] != os.getpid():
            state["client"] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
            state["pid"] = os.getpid()
        return state["client"]

    @app.post("/floor")
    def floor() -> Any:
        raw = request.get_data(cache=False)
        # One SET per request, overwriting one key: the floor must not fill Redis.
        client().set("bench:floor:last", raw, ex=300)
        return jsonify({"status": "accepted"}), 202

    return app
