"""The Flask webhook app: ``web:create_app()``, served by ``python -m web.serve`` (granian) or gunicorn.

Blueprints stay thin: authenticate, check, enqueue, answer. The clients they use
(broker producer, Redis, PostgreSQL) are built here once from the settings.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from sophia_tasks.flows import load_spec
from sophia_tasks.logs import configure_logging
from sophia_tasks.observe.sentry import init_sentry
from sophia_tasks.settings import ConfigError, Settings, load_settings
from web.documents import bp as documents_bp
from web.health import bp as health_bp
from web.services import Services
from web.trace import bp as trace_bp
from web.webhook import bp as webhook_bp

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    if not settings.webhook_tokens and not settings.webhook_secrets and not settings.gong_jwt_public_key \
            and not settings.insecure_no_auth:
        raise ConfigError(
            "SOPHIA_WEBHOOK_TOKENS is not set: refusing to start an unauthenticated webhook "
            "(set SOPHIA_INSECURE_NO_AUTH=1 to allow it on a private network)")
    configure_logging()
    spec = load_spec(settings.flow_path)
    init_sentry(settings, "web")  # SENTRY_DSN
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["sophia"] = Services(settings, spec)

    app.register_blueprint(webhook_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(documents_bp)
    app.register_blueprint(trace_bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        response = jsonify({"error": exc.name.lower(), "detail": exc.description})
        response.status_code = exc.code or 500
        return response

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> Any:
        log.exception("unhandled error")
        response = jsonify({"error": "internal error"})
        response.status_code = 500
        return response

    log.info("web app ready: collections %s, flow spec %s, body limit %d bytes", ", ".join(spec.collections),
             spec.path, settings.max_body_bytes)
    return app
