"""The floors for the web tier: a bare Flask app doing the minimum any receiver must do.

* ``POST /floor``: read the body, parse the JSON, one Redis SET (webhook ingest's floor);
* ``GET /floor/documents/<key>``: one Redis GET of the document our read endpoint serves for the
  same key, answered as JSON (the documents read's floor).

Served by the benchmark under the web's own gunicorn settings (``-c deploy/gunicorn.conf.py``,
same ``--workers`` and ``--threads``) and under granian (``--interface wsgi --workers 2``), with
the same requests, so "ours / floor" measures what authentication, checks, dedupe and publishing
cost on top of a request that does the least work, on the fastest server we can find for it.

    gunicorn -c deploy/gunicorn.conf.py "bench.floor_app:create_app()"
    granian --interface wsgi --workers 2 --factory bench.floor_app:create_app
"""
from __future__ import annotations

import os
from typing import Any

import orjson
import redis
from flask import Flask, Response, jsonify, request

#: Where the pipeline keeps the derived calls in Redis: the floor reads the documents ours reads.
DEFAULT_PREFIX = "sophia:gong_calls_enriched:"


def create_app() -> Flask:
    url = os.environ.get("BENCH_FLOOR_REDIS_URL") or os.environ.get("SOPHIA_REDIS_URL", "redis://127.0.0.1:6379/1")
    prefix = os.environ.get("BENCH_FLOOR_KEY_PREFIX", DEFAULT_PREFIX)
    app = Flask(__name__)
    state: dict[str, Any] = {"pid": None, "client": None}

    def client() -> redis.Redis:
        # a server may preload then fork: one client per process, never a shared socket.
        if state["pid"] != os.getpid():
            state["client"] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
            state["pid"] = os.getpid()
        return state["client"]

    @app.post("/floor")
    def floor() -> Any:
        raw = request.get_data(cache=False)
        orjson.loads(raw)  # any receiver must at least parse what it accepts
        # One SET per request, overwriting one key: the floor must not fill Redis.
        client().set("bench:floor:last", raw, ex=300)
        return jsonify({"status": "accepted"}), 202

    @app.get("/floor/documents/<key>")
    def document(key: str) -> Any:
        raw = client().get(prefix + key)
        if raw is None:
            return jsonify({"error": "not found"}), 404
        return Response(raw, content_type="application/json")

    return app
