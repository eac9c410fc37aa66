"""Answers every blueprint shares: JSON errors, and the check a read must pass."""
from __future__ import annotations

from typing import Any

from flask import jsonify, request

from web.auth import AuthError, Principal, authenticate_read
from web.services import Services, services


def error(status: int, message: str, detail: Any = None, retry_after: int | None = None) -> Any:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    response = jsonify(body)
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def refuse_read() -> Any | None:
    """None when this request may read (documents, /metrics); else its 401, 403 or 429 answer.

    Reads take a read token (SOPHIA_READ_TOKENS), never a webhook's credential, and count against
    the same per-credential rate limit as writes."""
    svc = services()
    try:
        principal = authenticate_read(svc.auth, request.headers)
    except AuthError as exc:
        return auth_refused(exc)
    return rate_refused(svc, principal)


def auth_refused(exc: AuthError) -> Any:
    """The 401 (with its challenge) or 403 answer to a failed authentication."""
    response = error(exc.status, exc.message)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="sophia-tasks"'
    return response


def rate_refused(svc: Services, principal: Principal) -> Any | None:
    """The 429 answer when this credential is over its per-minute budget, else None."""
    wait = svc.rate_limited(principal.subject)
    if wait is None:
        return None
    return error(429, "rate limited", f"at most {svc.settings.rate_limit_per_minute} requests a minute "
                                      "per credential", retry_after=wait)
