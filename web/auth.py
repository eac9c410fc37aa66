"""Authenticate a webhook request: bearer token, Standard Webhooks signature or Gong signed JWT.

Pure: takes the headers, the raw body and the URL, returns a :class:`Principal` or raises
:class:`AuthError` (401 missing credentials, 403 wrong ones). No Flask globals, no I/O, and no
secret or token ever appears in an error message.

Order of checks:

1. ``webhook-signature`` present and secrets configured: Standard Webhooks. The HMAC is the
   ``standardwebhooks`` library's (``Webhook(secret).sign``) over the *raw* body; we do the
   header and ±5 min timestamp checks ourselves so ``now`` can be injected and so a malformed
   header is a clean 401/403 instead of the library's ValueError. Valid under any configured
   secret (rotation) is enough.
2. ``Authorization: Bearer <token>``: constant-time compare against every configured token
   (SHA-256 digests compared, so lengths do not leak; no early exit). If it matches none and a
   Gong public key is configured and the value looks like a JWT, it is verified as a Gong JWT.
3. ``Authorization: <jwt>`` (bare, as Gong sends it): Gong signed JWT, RS256 only, ``exp``
   required and enforced (30 s leeway for clock skew), ``body_sha256`` = hex SHA-256 of the raw
   body, ``webhook_url`` = ``SOPHIA_PUBLIC_URL`` + path when set, else the request URL. URLs are
   compared without query string and fragment, with scheme and host case-insensitive and
   default ports (:80/:443) dropped; the path is compared exactly.

``insecure_no_auth``: requests with no credentials, or with a kind of credential nothing is
configured to check (e.g. a bearer token when no tokens are set), pass as
``Principal("none", "anonymous")``; credentials that *can* be checked and are wrong still get 403.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from standardwebhooks import Webhook
from werkzeug.datastructures import Headers

WEBHOOK_TOLERANCE_SECONDS = 5 * 60
JWT_LEEWAY_SECONDS = 30
_JWT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_MAX_JWT_LENGTH = 16 * 1024


class AuthError(Exception):
    """Authentication failed; ``status`` is 401 (missing credentials) or 403 (wrong ones)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class AuthConfig:
    tokens: tuple[str, ...]
    webhook_secrets: tuple[str, ...]
    gong_public_key_pem: str | None
    insecure_no_auth: bool
    public_url: str | None
    #: Bearer tokens for reads (documents, /metrics): a separate set, so a sender's token cannot read.
    read_tokens: tuple[str, ...] = ()

    def problems(self, require_tokens: bool = True) -> list[str]:
        """Configuration errors to report at start-up (never includes the secrets themselves).
        ``require_tokens=False``: the secrets' format only (tokens are optional beside another method)."""
        found = []
        if require_tokens and not self.tokens and not self.insecure_no_auth:
            found.append("SOPHIA_WEBHOOK_TOKENS is empty (set SOPHIA_INSECURE_NO_AUTH=1 to run without auth)")
        for index, secret in enumerate(self.webhook_secrets):
            if _webhook(secret) is None:
                found.append(f"SOPHIA_WEBHOOK_SECRET entry {index + 1} is not a valid whsec_<base64> secret")
        if self.gong_public_key_pem and _public_key(self.gong_public_key_pem) is None:
            found.append("SOPHIA_GONG_JWT_PUBLIC_KEY is not a PEM RSA public key")
        if self.public_url and not urlsplit(self.public_url).netloc:
            found.append("SOPHIA_PUBLIC_URL must be an absolute URL like https://hooks.example.com")
        return found


@dataclass(frozen=True)
class Principal:
    method: str
    subject: str


def authenticate(
    config: AuthConfig,
    headers: Mapping[str, str],
    raw_body: bytes,
    request_url: "str | Callable[[], str]",
    path: str,
    now: float | None = None,
) -> Principal:
    """Who sent this request, or AuthError(401/403). ``now`` (unix seconds) is for tests.

    ``request_url`` may be a callable: only a Gong JWT needs it, and building it costs a
    noticeable share of a request."""
    current = time.time() if now is None else now
    lowered = _case_insensitive(headers)
    body = bytes(raw_body)

    signature = lowered.get("webhook-signature")
    if signature is not None and config.webhook_secrets:
        return _standard_webhooks(config, lowered, body, current)

    authorization = (lowered.get("authorization") or "").strip()
    if authorization:
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return _bearer(config, rest.strip(), body, request_url, path, current)
        if " " not in authorization and _looks_like_jwt(authorization):
            if config.gong_public_key_pem:
                return _gong_jwt(config, authorization, body, request_url, path, current)
            if config.insecure_no_auth:
                return _anonymous()
            raise AuthError(401, "missing credentials: a signed JWT was sent but no Gong public key is configured")
        if config.insecure_no_auth:
            return _anonymous()
        raise AuthError(401, "missing credentials: Authorization must be 'Bearer <token>' or a Gong signed JWT")

    if config.insecure_no_auth:
        return _anonymous()
    if signature is not None:
        raise AuthError(401, "missing credentials: a webhook signature was sent but no webhook secret is configured")
    raise AuthError(401, "missing credentials")


def authenticate_read(config: AuthConfig, headers: Mapping[str, str]) -> Principal:
    """Who reads, or AuthError: 401 without a bearer token, 403 with a wrong one or a write token.

    Only ``Authorization: Bearer <read token>`` reads: a webhook token, a signature or a Gong JWT
    proves the right to send events, not to read them back."""
    authorization = (_case_insensitive(headers).get("authorization") or "").strip()
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        if not config.read_tokens and config.insecure_no_auth:
            return _anonymous()
        raise AuthError(401, "missing credentials: reads need 'Authorization: Bearer <read token>'")
    presented = _digest(token)
    matched: str | None = None
    for candidate in config.read_tokens:
        # As for webhook tokens: every token compared in constant time, no early exit.
        if hmac.compare_digest(presented, _configured_digest(candidate)) and matched is None:
            matched = candidate
    if matched is not None:
        return Principal("read", f"read:{_configured_fingerprint(matched)}")
    if not config.read_tokens and config.insecure_no_auth:
        return _anonymous()
    raise AuthError(403, "invalid read token (webhook tokens cannot read; reads need one of SOPHIA_READ_TOKENS)")


# --------------------------------------------------------------------------- helpers


def _case_insensitive(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Headers to read by lower-case name. Werkzeug's already are: copying them into a dict cost
    a third of the handler's authentication time."""
    if isinstance(headers, Headers):
        return headers
    return {str(key).lower(): value for key, value in headers.items()}


def _anonymous() -> Principal:
    return Principal("none", "anonymous")


def _fingerprint(secret: str) -> str:
    """First 8 hex of SHA-256: identifies a credential in logs/rate limits without revealing it."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


# The configured tokens' digests and fingerprints, computed once, not per request. Only
# configured values are cached: a presented token is hashed every time and never kept.
_configured_digest = functools.lru_cache(maxsize=64)(_digest)
_configured_fingerprint = functools.lru_cache(maxsize=64)(_fingerprint)


def _bearer(
    config: AuthConfig, token: str, body: bytes, request_url: "str | Callable[[], str]", path: str, now: float
) -> Principal:
    if not token:
        raise AuthError(401, "missing credentials: empty bearer token")
    presented = _digest(token)
    matched: str | None = None
    for candidate in config.tokens:
        # Every token is compared (no early exit), each compare constant-time on equal-length digests.
        if hmac.compare_digest(presented, _configured_digest(candidate)) and matched is None:
            matched = candidate
    if matched is not None:
        return Principal("bearer", f"bearer:{_configured_fingerprint(matched)}")
    if config.gong_public_key_pem and _looks_like_jwt(token):
        return _gong_jwt(config, token, body, request_url, path, now)
    if not config.tokens and config.insecure_no_auth:
        return _anonymous()  # nothing configured to check a bearer token against
    raise AuthError(403, "invalid bearer token")


def _looks_like_jwt(value: str) -> bool:
    return len(value) <= _MAX_JWT_LENGTH and _JWT_RE.fullmatch(value) is not None


@functools.lru_cache(maxsize=32)
def _webhook(secret: str) -> Webhook | None:
    """The library's verifier for one secret, or None if the secret is not valid base64."""
    try:
        return Webhook(secret)
    except Exception:  # binascii.Error, EmptyWebhookSecretError, RuntimeError: a config problem
        return None


def _standard_webhooks(config: AuthConfig, headers: Mapping[str, str], body: bytes, now: float) -> Principal:
    msg_id = (headers.get("webhook-id") or "").strip()
    timestamp_text = (headers.get("webhook-timestamp") or "").strip()
    signature_header = (headers.get("webhook-signature") or "").strip()
    if not msg_id or not timestamp_text or not signature_header:
        raise AuthError(401, "missing credentials: webhook-id, webhook-timestamp and webhook-signature "
                             "are all required")
    if not timestamp_text.isascii() or not timestamp_text.isdigit() or len(timestamp_text) > 12:
        raise AuthError(403, "invalid webhook-timestamp: expected unix seconds")
    timestamp = int(timestamp_text)
    if timestamp < now - WEBHOOK_TOLERANCE_SECONDS:
        raise AuthError(403, "webhook timestamp is too old (more than 5 minutes): rejected as a possible replay")
    if timestamp > now + WEBHOOK_TOLERANCE_SECONDS:
        raise AuthError(403, "webhook timestamp is too far in the future (more than 5 minutes): "
                             "check the sender's clock")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthError(403, "invalid webhook signature: body is not UTF-8") from None

    presented: list[bytes] = []
    for part in signature_header.split():
        version, _, encoded = part.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            presented.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not presented:
        raise AuthError(403, "invalid webhook signature: no v1 signature found")

    when = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
    matched: str | None = None
    for secret in config.webhook_secrets:
        verifier = _webhook(secret)
        if verifier is None:
            continue
        try:
            expected = base64.b64decode(verifier.sign(msg_id, when, payload).split(",", 1)[1])
        except (UnicodeEncodeError, ValueError):
            continue
        for candidate in presented:
            if hmac.compare_digest(expected, candidate) and matched is None:
                matched = secret
    if matched is None:
        raise AuthError(403, "invalid webhook signature")
    return Principal("standard_webhooks", f"standard_webhooks:{_fingerprint(matched)}")


@functools.lru_cache(maxsize=8)
def _public_key(pem: str) -> RSAPublicKey | None:
    """Load the Gong rule's RSA public key once; tolerates ``\\n`` escapes from .env files."""
    text = pem.strip().replace("\\n", "\n")
    try:
        key = load_pem_public_key(text.encode("utf-8"))
    except (ValueError, TypeError, UnicodeEncodeError):
        return None
    return key if isinstance(key, RSAPublicKey) else None


def _gong_jwt(
    config: AuthConfig, token: str, body: bytes, request_url: "str | Callable[[], str]", path: str, now: float
) -> Principal:
    assert config.gong_public_key_pem is not None
    key = _public_key(config.gong_public_key_pem)
    if key is None:
        raise AuthError(403, "invalid JWT: the configured Gong public key is not a PEM RSA public key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            # Time claims are checked below against the injectable ``now``.
            options={
                "require": ["exp", "body_sha256", "webhook_url"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(403, f"invalid JWT: missing claim {exc.claim!r}") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError(403, "invalid JWT: only RS256 is accepted") from None
    except jwt.InvalidSignatureError:
        raise AuthError(403, "invalid JWT: signature does not verify") from None
    except jwt.PyJWTError:
        raise AuthError(403, "invalid JWT: malformed token") from None
    except Exception:  # e.g. odd header values the library trips on: still the client's fault
        raise AuthError(403, "invalid JWT: malformed token") from None

    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not math.isfinite(exp):
        raise AuthError(403, "invalid JWT: exp must be a number")
    if now >= exp + JWT_LEEWAY_SECONDS:
        raise AuthError(403, "invalid JWT: token has expired")
    nbf = claims.get("nbf")
    if nbf is not None:
        if isinstance(nbf, bool) or not isinstance(nbf, (int, float)) or not math.isfinite(nbf):
            raise AuthError(403, "invalid JWT: nbf must be a number")
        if now + JWT_LEEWAY_SECONDS < nbf:
            raise AuthError(403, "invalid JWT: token is not valid yet")

    body_hash = claims["body_sha256"]
    if not isinstance(body_hash, str) or not hmac.compare_digest(
        body_hash.strip().lower().encode("utf-8", "surrogatepass"),
        hashlib.sha256(body).hexdigest().encode("ascii"),
    ):
        raise AuthError(403, "invalid JWT: body_sha256 does not match the request body")

    if config.public_url:
        expected_url = f"{config.public_url.rstrip('/')}{path}"
    else:
        expected_url = request_url() if callable(request_url) else request_url
    claimed_url = claims["webhook_url"]
    claimed = _normalize_url(claimed_url) if isinstance(claimed_url, str) else None
    if claimed is None or claimed != _normalize_url(expected_url):
        raise AuthError(403, "invalid JWT: webhook_url does not match this endpoint")

    return Principal("gong_jwt", f"gong_jwt:{_fingerprint(config.gong_public_key_pem)}")


def _normalize_url(url: str) -> tuple[str, str, str] | None:
    """(scheme, host[:port], path) without query/fragment; default ports dropped."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not scheme or not host:
        return None
    if port is not None and (scheme, port) not in {("http", 80), ("https", 443)}:
        host = f"{host}:{port}"
    return scheme, host, parts.path or "/"
