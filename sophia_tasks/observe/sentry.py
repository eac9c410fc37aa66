"""Error reporting to Sentry for the web app, the workers and beat, with secrets and PII scrubbed.

Why a scrubber of our own: events carry exception messages, local variables,
log breadcrumbs and request headers. In this service those hold bearer tokens,
Standard Webhooks secrets, database passwords inside URLs, and sales calls and deals
full of buyers' emails and phone numbers. Sentry's own ``EventScrubber`` only drops
values by key name; ``Scrubber`` also removes the configured secret values
wherever they appear, masks emails and phones in every string with the same
masker the enrichment uses, and drops variables that hold whole documents
(the dead-letter store keeps the payload; a traceback does not need it).

Why retries are reported: every stage task autoretries on any exception, with
backoff, many times before it fails for good (``StageTask``), and Celery's
integration ignores ``Retry``: a poison message would reach Sentry only a quarter
of an hour later, when its retries are spent. The 1st, 2nd, 4th, 8th... retry of
a task is reported too: visible at once, and no storm.

Importing this module connects the Celery signals (``celery_app`` imports it);
``init_sentry`` is a no-op when ``SENTRY_DSN`` is unset.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from celery import signals

from sophia_tasks.derivations.pii import mask_text
from sophia_tasks.messaging.config import is_bound, settings_of
from sophia_tasks.settings import Settings, reveal

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"
# Keys whose values are secrets wherever they appear in an event (headers, vars, extra, breadcrumbs).
SECRET_KEY = re.compile(
    r"authori[sz]ation|token|secret|passw|pwd|api[_-]?key|apikey|signature|cookie|session|credential|"
    r"private[_-]?key|dsn|webhook[_-]?url|x[_-]?auth", re.IGNORECASE)
# Local variables and extras that hold whole documents or request bodies: customer data, dropped.
DOCUMENT_VARS = frozenset({
    "documents", "docs", "doc", "document", "events", "event_list", "payload", "body", "raw", "data",
    "letters", "letter", "call", "calls", "fixed", "items", "batch", "retryable", "keyless", "pairs", "out",
    "result", "rows", "derived", "source", "envelope", "message", "messages",
})
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values that reached a message: Bearer/Basic/Token credentials.
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+|=|:\s*)[A-Za-z0-9._~+/=\-]{8,}"), r"\1\2" + FILTERED),
    # Standard Webhooks secrets and signatures.
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), FILTERED),
    (re.compile(r"\bv1,[A-Za-z0-9+/=]{16,}"), FILTERED),
    # JWTs (Gong signed webhooks).
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), FILTERED),
    # Passwords inside URLs: scheme://user:password@host.
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + FILTERED + "@"),
    # Slack incoming webhooks: the URL is the credential.
    (re.compile(r"https://hooks\.slack\.com/\S+"), FILTERED),
)
# Literal secrets shorter than this are not replaced: too likely to occur in ordinary words.
MIN_SECRET_LEN = 6


def secret_values(settings: Settings) -> list[str]:
    """Every configured credential, so it is removed wherever it appears (messages, vars, reprs)."""
    tokens = [t.reveal() for t in (*settings.webhook_tokens, *settings.read_tokens)]
    secrets = [s.reveal() for s in settings.webhook_secrets]
    values: list[str] = [*tokens, *secrets]
    for secret in secrets:
        if secret.startswith("whsec_"):
            values.append(secret[len("whsec_"):])
    password = settings.snowflake.password.reveal()
    if password and password != "sophia":
        values.append(password)
    for url in (settings.broker_url, settings.redis_url, settings.postgres_dsn):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            values.append(password)
    for secret in (settings.slack_webhook_url, settings.sentry_dsn, settings.gong_access_key_secret):
        if secret:
            values.append(secret.reveal())
    return [v for v in values if v and len(v) >= MIN_SECRET_LEN]


class Scrubber:
    """Removes secrets and masks PII in a Sentry event (``before_send``) and breadcrumbs."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, unique))) if unique else None

    # -- values --------------------------------------------------------------------------
    def text(self, value: str) -> str:
        if self._secrets is not None:
            value = self._secrets.sub(FILTERED, value)
        for pattern, repl in _PATTERNS:
            value = pattern.sub(repl, value)
        return mask_text(value)

    def value(self, value: Any, depth: int = 0) -> Any:
        """A scrubbed copy: secret-named keys filtered, every string cleaned."""
        if depth > 20:
            return FILTERED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                if isinstance(k, str) and SECRET_KEY.search(k) and v not in (None, "", {}, []):
                    out[k] = FILTERED
                else:
                    out[k] = self.value(v, depth + 1)
            return out
        if isinstance(value, (list, tuple)):
            return [self.value(v, depth + 1) for v in value]
        return value

    # -- events --------------------------------------------------------------------------
    def event(self, event: dict[str, Any], hint: Any = None) -> dict[str, Any]:
        """``before_send``: never drops an event, always returns a scrubbed one."""
        try:
            self._request(event.get("request"))
            self._frames(event)
            extra = event.get("extra")
            if isinstance(extra, dict):
                job = extra.get("celery-job")
                if isinstance(job, dict):
                    for key in ("args", "kwargs"):
                        if key in job:
                            job[key] = FILTERED
                for key in list(extra):
                    if key in DOCUMENT_VARS:
                        extra[key] = FILTERED
            return self.value(event)
        except Exception as exc:  # a scrubber bug must not leak the raw event: send a bare one instead
            log.error("sentry scrubber failed (%s); sending the event without details", type(exc).__name__)
            bare: dict[str, Any] = {"level": "error", "message": "event dropped by the scrubber (see logs)"}
            for key in ("event_id", "timestamp", "level"):
                try:
                    value = dict.get(event, key)
                except Exception:
                    value = None
                if isinstance(value, (str, int, float)):
                    bare[key] = value
            return bare

    def breadcrumb(self, crumb: dict[str, Any], hint: Any = None) -> dict[str, Any]:
        return self.value(crumb)

    def _request(self, request: Any) -> None:
        if not isinstance(request, dict):
            return
        # Webhook bodies are calls and deals: customer data, never sent.
        if "data" in request:
            request["data"] = FILTERED
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            for name in list(headers):
                lower = name.lower()
                if SECRET_KEY.search(lower) or lower.startswith("webhook-") or lower in ("cookie", "set-cookie"):
                    headers[name] = FILTERED

    def _frames(self, event: dict[str, Any]) -> None:
        for container in (event.get("exception"), event.get("threads")):
            if not isinstance(container, dict):
                continue
            for entry in container.get("values") or []:
                frames = ((entry or {}).get("stacktrace") or {}).get("frames") or []
                for frame in frames:
                    variables = frame.get("vars") if isinstance(frame, dict) else None
                    if isinstance(variables, dict):
                        for name in list(variables):
                            if name in DOCUMENT_VARS:
                                variables[name] = FILTERED


_component: str | None = None


def init_sentry(settings: Settings, component: str) -> bool:
    """Start error reporting for this process if ``SENTRY_DSN`` is set; True when it is on."""
    global _component
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.logging import ignore_logger
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    ignore_logger(__name__)  # the scrubber's own complaints must not become events
    scrubber = Scrubber(secret_values(settings))
    denylist = DEFAULT_DENYLIST + ["webhook_secret", "webhook_tokens", "signature", "webhook-signature", "dsn",
                                   "postgres_dsn", "broker_url", "redis_url", "slack_webhook_url", "password"]
    tracing = settings.sentry_traces_sample_rate > 0
    sentry_sdk.init(
        dsn=reveal(settings.sentry_dsn),
        environment=settings.sentry_environment,
        release=_release(),
        # No user data is sent: that is sentry-sdk's default (send_default_pii, deprecated by name in 2.7x).
        max_request_body_size="never",
        include_local_variables=True,
        traces_sample_rate=settings.sentry_traces_sample_rate if tracing else None,
        integrations=[CeleryIntegration(propagate_traces=tracing, monitor_beat_tasks=False), FlaskIntegration()],
        event_scrubber=EventScrubber(denylist=denylist, recursive=True),
        before_send=scrubber.event,
        before_send_transaction=scrubber.event,
        before_breadcrumb=scrubber.breadcrumb,
    )
    sentry_sdk.set_tag("component", component)
    _component = component
    log.info("sentry error reporting on for %s", component)
    return True


def _release() -> str | None:
    try:
        from importlib.metadata import version

        return f"sophia-tasks@{version('sophia-tasks')}"
    except Exception:
        return None


def _settings_of(app: Any = None) -> Settings | None:
    """The settings a worker's or beat's app was configured with (None: not one of ours)."""
    return settings_of(app) if is_bound(app) else None


# -- Celery wiring: the worker's main process (batcher), each pool child, and beat ---------------
@signals.celeryd_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    settings = _settings_of()
    if settings is not None:
        init_sentry(settings, "worker")


@signals.worker_process_init.connect
def _on_pool_child_init(**_: Any) -> None:
    # A fresh client per forked child: no transport thread or socket shared across a fork.
    settings = _settings_of(None)
    if settings is not None:
        init_sentry(settings, "worker")


@signals.beat_init.connect
def _on_beat_init(sender: Any = None, **_: Any) -> None:
    settings = _settings_of(getattr(sender, "app", None))
    if settings is not None:
        init_sentry(settings, "beat")


def should_report_retry(retries_before: int) -> bool:
    """The 1st, 2nd, 4th, 8th... retry of one message: at once, then ever more rarely."""
    n = retries_before + 1
    return n > 0 and (n & (n - 1)) == 0


@signals.task_retry.connect
def _on_task_retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    """Report the exception behind an autoretry; Celery's integration skips ``Retry`` entirely."""
    import sentry_sdk

    if not sentry_sdk.get_client().is_active():
        return
    exc = getattr(reason, "exc", None)
    if not isinstance(exc, BaseException):
        return
    retries = int(getattr(request, "retries", 0) or 0)
    if not should_report_retry(retries):
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("celery_task_name", getattr(sender, "name", "?"))
        scope.set_tag("retry", retries + 1)
        scope.set_context("retry", {"retries_before": retries, "reported": "1st, 2nd, 4th, 8th... retry"})
        scope.fingerprint = ["celery-retry", getattr(sender, "name", "?"), type(exc).__name__]
        sentry_sdk.capture_exception(exc)
