"""web.auth.authenticate: bearer tokens, Standard Webhooks signatures, Gong signed JWTs."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from web.auth import AuthConfig, AuthError, Principal, authenticate

BODY = b'{"type": "call_completed", "data": {"metaData": {"id": "123"}}}'
PATH = "/webhooks/gong"
REQUEST_URL = "http://127.0.0.1:9009/webhooks/gong"
PUBLIC_URL = "https://hooks.example.com"
NOW = 1_714_579_200.0
TOKEN_A = "tok-alpha-0123456789"
TOKEN_B = "tok-bravo-9876543210"
SECRET_A = "whsec_" + base64.b64encode(b"a" * 32).decode()
SECRET_B = "whsec_" + base64.b64encode(b"b" * 32).decode()


def _pem_pair(key: Any) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


PRIVATE_PEM, PUBLIC_PEM = _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
OTHER_PRIVATE_PEM, _ = _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def config(**overrides: Any) -> AuthConfig:
    base = AuthConfig(
        tokens=(TOKEN_A,),
        webhook_secrets=(),
        gong_public_key_pem=None,
        insecure_no_auth=False,
        public_url=None,
    )
    return replace(base, **overrides)


def auth(cfg: AuthConfig, headers: dict[str, str], body: bytes = BODY, url: str = REQUEST_URL,
         path: str = PATH, now: float | None = NOW) -> Principal:
    return authenticate(cfg, headers, body, url, path, now=now)


def denied(cfg: AuthConfig, headers: dict[str, str], status: int, **kwargs: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        auth(cfg, headers, **kwargs)
    assert info.value.status == status
    return info.value


def assert_no_secret_in(err: AuthError, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in err.message and secret not in str(err)


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


# ----------------------------------------------------------------- bearer


def test_bearer_ok() -> None:
    principal = auth(config(), {"Authorization": f"Bearer {TOKEN_A}"})
    assert principal == Principal("bearer", f"bearer:{fingerprint(TOKEN_A)}")
    assert TOKEN_A not in principal.subject


def test_bearer_scheme_and_header_name_are_case_insensitive() -> None:
    assert auth(config(), {"authorization": f"bearer {TOKEN_A}"}).method == "bearer"
    assert auth(config(), {"AUTHORIZATION": f"  Bearer   {TOKEN_A}  "}).method == "bearer"


def test_werkzeug_headers_are_read_as_they_are_with_the_same_verdicts() -> None:
    """The web passes Werkzeug's request headers, read without a copy: same answers as a dict."""
    from werkzeug.datastructures import EnvironHeaders, Headers

    environ = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN_A}", "CONTENT_TYPE": "application/json"}
    assert auth(config(), EnvironHeaders(environ)) == auth(config(), {"Authorization": f"Bearer {TOKEN_A}"})  # type: ignore[arg-type]
    assert denied(config(), Headers({"AUTHORIZATION": "Bearer nope"}), 403).status == 403  # type: ignore[arg-type]
    assert denied(config(), Headers({"Content-Type": "application/json"}), 401).status == 401  # type: ignore[arg-type]
    signed = Headers({k.upper(): v for k, v in signed_headers(SECRET_A).items()})
    assert auth(config(webhook_secrets=(SECRET_A,)), signed).method == "standard_webhooks"  # type: ignore[arg-type]


def test_bearer_rotation_accepts_either_token() -> None:
    cfg = config(tokens=(TOKEN_A, TOKEN_B))
    a = auth(cfg, {"Authorization": f"Bearer {TOKEN_A}"})
    b = auth(cfg, {"Authorization": f"Bearer {TOKEN_B}"})
    assert a.method == b.method == "bearer"
    assert a.subject != b.subject


@pytest.mark.parametrize("token", ["wrong", TOKEN_A + "x", TOKEN_A[:-1], TOKEN_A.upper(), "tøken-ünicode", "a.b.c"])
def test_bearer_wrong_is_403(token: str) -> None:
    err = denied(config(tokens=(TOKEN_A, TOKEN_B)), {"Authorization": f"Bearer {token}"}, 403)
    assert err.message == "invalid bearer token"
    assert_no_secret_in(err, TOKEN_A, TOKEN_B, token)


def test_missing_credentials_is_401() -> None:
    err = denied(config(), {}, 401)
    assert err.message == "missing credentials"
    denied(config(), {"Authorization": ""}, 401)
    denied(config(), {"Authorization": "Bearer"}, 401)
    denied(config(), {"Authorization": "Bearer   "}, 401)


def test_unsupported_scheme_is_401() -> None:
    err = denied(config(), {"Authorization": "Basic dXNlcjpwYXNz"}, 401)
    assert "Bearer" in err.message


def test_insecure_no_auth() -> None:
    cfg = config(tokens=(), insecure_no_auth=True)
    assert auth(cfg, {}) == Principal("none", "anonymous")
    # Nothing configured to check a bearer token against: still anonymous.
    assert auth(cfg, {"Authorization": "Bearer whatever"}) == Principal("none", "anonymous")
    # But credentials that can be checked and are wrong are still refused.
    cfg = config(insecure_no_auth=True)
    assert auth(cfg, {}) == Principal("none", "anonymous")
    denied(cfg, {"Authorization": "Bearer wrong"}, 403)
    assert auth(cfg, {"Authorization": f"Bearer {TOKEN_A}"}).method == "bearer"


# ----------------------------------------------------------------- Standard Webhooks


def signed_headers(secret: str, body: bytes = BODY, msg_id: str = "msg_2abc", ts: float = NOW) -> dict[str, str]:
    when = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(ts)), "webhook-signature": signature}


def test_standard_webhooks_ok() -> None:
    cfg = config(webhook_secrets=(SECRET_A,))
    principal = auth(cfg, signed_headers(SECRET_A))
    assert principal == Principal("standard_webhooks", f"standard_webhooks:{fingerprint(SECRET_A)}")


def test_standard_webhooks_ok_with_real_clock_and_library_verify() -> None:
    """Our verdict agrees with the library's own verify() on a fresh message."""
    now = time.time()
    headers = signed_headers(SECRET_A, ts=now)
    Webhook(SECRET_A).verify(BODY, headers)
    assert auth(config(webhook_secrets=(SECRET_A,)), headers, now=None).method == "standard_webhooks"


def test_standard_webhooks_secret_rotation_and_multiple_signatures() -> None:
    cfg = config(webhook_secrets=(SECRET_A, SECRET_B))
    assert auth(cfg, signed_headers(SECRET_B)).subject == f"standard_webhooks:{fingerprint(SECRET_B)}"
    headers = signed_headers(SECRET_B)
    headers["webhook-signature"] = "v1,AAAA " + "v2,whatever " + headers["webhook-signature"]
    assert auth(config(webhook_secrets=(SECRET_B,)), headers).method == "standard_webhooks"


def test_standard_webhooks_unicode_body() -> None:
    body = '{"title": "Réunion 🚀 李"}'.encode()
    cfg = config(webhook_secrets=(SECRET_A,))
    assert auth(cfg, signed_headers(SECRET_A, body=body), body=body).method == "standard_webhooks"


def test_standard_webhooks_tampered_body_is_403() -> None:
    cfg = config(webhook_secrets=(SECRET_A,))
    err = denied(cfg, signed_headers(SECRET_A), 403, body=BODY.replace(b"123", b"124"))
    assert err.message == "invalid webhook signature"
    assert_no_secret_in(err, SECRET_A)


def test_standard_webhooks_wrong_secret_or_id_is_403() -> None:
    cfg = config(webhook_secrets=(SECRET_A,))
    denied(cfg, signed_headers(SECRET_B), 403)
    headers = signed_headers(SECRET_A)
    headers["webhook-id"] = "msg_other"
    denied(cfg, headers, 403)


def test_standard_webhooks_stale_timestamp_is_403() -> None:
    cfg = config(webhook_secrets=(SECRET_A,))
    err = denied(cfg, signed_headers(SECRET_A, ts=NOW - 6 * 60), 403)
    assert "too old" in err.message
    # Within tolerance is fine.
    assert auth(cfg, signed_headers(SECRET_A, ts=NOW - 4 * 60)).method == "standard_webhooks"


def test_standard_webhooks_future_timestamp_is_403() -> None:
    cfg = config(webhook_secrets=(SECRET_A,))
    err = denied(cfg, signed_headers(SECRET_A, ts=NOW + 6 * 60), 403)
    assert "future" in err.message
    assert auth(cfg, signed_headers(SECRET_A, ts=NOW + 4 * 60)).method == "standard_webhooks"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp"])
def test_standard_webhooks_missing_headers_is_401(missing: str) -> None:
    headers = signed_headers(SECRET_A)
    del headers[missing]
    denied(config(webhook_secrets=(SECRET_A,)), headers, 401)


@pytest.mark.parametrize(
    ("header", "value"),
    [("webhook-timestamp", "abc"), ("webhook-timestamp", "1714579200.5"), ("webhook-timestamp", "-5"),
     ("webhook-signature", "garbage"), ("webhook-signature", "v1,not-base64!!"), ("webhook-signature", "v1,")],
)
def test_standard_webhooks_malformed_headers_are_403(header: str, value: str) -> None:
    headers = signed_headers(SECRET_A)
    headers[header] = value
    denied(config(webhook_secrets=(SECRET_A,)), headers, 403)


def test_standard_webhooks_signature_wins_over_bearer() -> None:
    cfg = config(webhook_secrets=(SECRET_A,))
    headers = signed_headers(SECRET_A, body=b"{}")
    headers["Authorization"] = f"Bearer {TOKEN_A}"
    denied(cfg, headers, 403)  # signature present -> it is what gets checked


def test_signature_without_configured_secret_falls_back_to_authorization() -> None:
    headers = signed_headers(SECRET_A)
    err = denied(config(), headers, 401)
    assert "no webhook secret" in err.message
    headers["Authorization"] = f"Bearer {TOKEN_A}"
    assert auth(config(), headers).method == "bearer"


def test_non_utf8_body_with_signature_is_403() -> None:
    denied(config(webhook_secrets=(SECRET_A,)), signed_headers(SECRET_A), 403, body=b"\xff\xfe")


def test_invalid_configured_secret_is_reported_and_skipped() -> None:
    cfg = config(webhook_secrets=("whsec_", SECRET_A))
    assert any("SOPHIA_WEBHOOK_SECRET entry 1" in p for p in cfg.problems())
    assert auth(cfg, signed_headers(SECRET_A)).method == "standard_webhooks"


# ----------------------------------------------------------------- Gong signed JWT


def claims(body: bytes = BODY, url: str = PUBLIC_URL + PATH, exp: float = NOW + 300, **extra: Any) -> dict:
    return {"webhook_url": url, "body_sha256": hashlib.sha256(body).hexdigest(), "exp": int(exp), **extra}


def gong_token(payload: dict, key: str = PRIVATE_PEM, algorithm: str = "RS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def jwt_config(**overrides: Any) -> AuthConfig:
    return config(**{"gong_public_key_pem": PUBLIC_PEM, "public_url": PUBLIC_URL, **overrides})


def test_gong_jwt_bare_header_ok() -> None:
    principal = auth(jwt_config(), {"Authorization": gong_token(claims())})
    assert principal == Principal("gong_jwt", f"gong_jwt:{fingerprint(PUBLIC_PEM)}")


def test_gong_jwt_with_bearer_prefix_ok() -> None:
    assert auth(jwt_config(), {"Authorization": "Bearer " + gong_token(claims())}).method == "gong_jwt"


def test_gong_jwt_with_real_clock() -> None:
    token = gong_token(claims(exp=time.time() + 60))
    assert auth(jwt_config(), {"Authorization": token}, now=None).method == "gong_jwt"


def test_gong_jwt_public_key_with_escaped_newlines() -> None:
    cfg = jwt_config(gong_public_key_pem=PUBLIC_PEM.replace("\n", "\\n"))
    assert auth(cfg, {"Authorization": gong_token(claims())}).method == "gong_jwt"


def test_gong_jwt_expired_is_403() -> None:
    err = denied(jwt_config(), {"Authorization": gong_token(claims(exp=NOW - 120))}, 403)
    assert "expired" in err.message


def test_gong_jwt_without_exp_is_403() -> None:
    payload = claims()
    del payload["exp"]
    err = denied(jwt_config(), {"Authorization": gong_token(payload)}, 403)
    assert "exp" in err.message


def test_gong_jwt_not_yet_valid_is_403() -> None:
    denied(jwt_config(), {"Authorization": gong_token(claims(nbf=int(NOW + 600)))}, 403)


def test_gong_jwt_wrong_body_hash_is_403() -> None:
    token = gong_token(claims(body=b"something else"))
    err = denied(jwt_config(), {"Authorization": token}, 403)
    assert "body_sha256" in err.message
    # And the right token with a tampered body.
    denied(jwt_config(), {"Authorization": gong_token(claims())}, 403, body=BODY + b" ")


def test_gong_jwt_body_hash_is_case_insensitive_hex() -> None:
    payload = claims()
    payload["body_sha256"] = payload["body_sha256"].upper()
    assert auth(jwt_config(), {"Authorization": gong_token(payload)}).method == "gong_jwt"


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/estuary/webhook", "https://evil.example.com/webhooks/gong",
     "http://hooks.example.com/webhooks/gong", "https://hooks.example.com/webhooks/gong/",
     "https://hooks.example.com:8443/webhooks/gong", "not a url"],
)
def test_gong_jwt_wrong_webhook_url_is_403(url: str) -> None:
    err = denied(jwt_config(), {"Authorization": gong_token(claims(url=url))}, 403)
    assert "webhook_url" in err.message


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/webhooks/gong", "HTTPS://Hooks.Example.com/webhooks/gong",
     "https://hooks.example.com:443/webhooks/gong", "https://hooks.example.com/webhooks/gong?rule=42"],
)
def test_gong_jwt_webhook_url_equivalents(url: str) -> None:
    assert auth(jwt_config(), {"Authorization": gong_token(claims(url=url))}).method == "gong_jwt"


def test_gong_jwt_public_url_trailing_slash_and_path() -> None:
    cfg = jwt_config(public_url=PUBLIC_URL + "/")
    token = gong_token(claims(url=PUBLIC_URL + "/estuary/webhook"))
    assert auth(cfg, {"Authorization": token}, path="/estuary/webhook").method == "gong_jwt"
    denied(cfg, {"Authorization": token}, 403, path=PATH)


def test_gong_jwt_without_public_url_uses_request_url_minus_query() -> None:
    cfg = jwt_config(public_url=None)
    token = gong_token(claims(url=REQUEST_URL))
    assert auth(cfg, {"Authorization": token}, url=REQUEST_URL + "?x=1").method == "gong_jwt"
    denied(cfg, {"Authorization": gong_token(claims())}, 403)  # claims the public URL instead


def test_gong_jwt_signed_by_another_key_is_403() -> None:
    err = denied(jwt_config(), {"Authorization": gong_token(claims(), key=OTHER_PRIVATE_PEM)}, 403)
    assert "signature" in err.message


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_gong_jwt_hs256_with_public_key_as_secret_is_403() -> None:
    """The classic algorithm-confusion attack: HMAC keyed with the (public) PEM."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64url(hmac.new(PUBLIC_PEM.encode(), signing_input, hashlib.sha256).digest())
    token = f"{header}.{payload}.{signature}"
    err = denied(jwt_config(), {"Authorization": token}, 403)
    assert "RS256" in err.message
    denied(jwt_config(), {"Authorization": f"Bearer {token}"}, 403)


def test_gong_jwt_alg_none_is_403() -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    assert token.endswith(".")
    err = denied(jwt_config(), {"Authorization": token}, 403)
    assert "RS256" in err.message


def test_gong_jwt_es256_is_403() -> None:
    ec_private, _ = _pem_pair(ec.generate_private_key(ec.SECP256R1()))
    denied(jwt_config(), {"Authorization": gong_token(claims(), key=ec_private, algorithm="ES256")}, 403)


@pytest.mark.parametrize("token", ["a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.AAAA", "abc.def.ghi"])
def test_gong_jwt_garbage_is_403(token: str) -> None:
    denied(jwt_config(), {"Authorization": token}, 403)


def test_bare_jwt_without_configured_key_is_401() -> None:
    err = denied(config(), {"Authorization": gong_token(claims())}, 401)
    assert "no Gong public key" in err.message


def test_bearer_token_still_works_when_jwt_key_configured() -> None:
    assert auth(jwt_config(), {"Authorization": f"Bearer {TOKEN_A}"}).method == "bearer"
    denied(jwt_config(), {"Authorization": "Bearer wrong-token"}, 403)


def test_invalid_configured_public_key() -> None:
    cfg = jwt_config(gong_public_key_pem="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")
    assert any("SOPHIA_GONG_JWT_PUBLIC_KEY" in p for p in cfg.problems())
    denied(cfg, {"Authorization": gong_token(claims())}, 403)


def test_config_problems() -> None:
    assert config().problems() == []
    assert config(tokens=()).problems() and not config(tokens=(), insecure_no_auth=True).problems()
    assert config(public_url="hooks.example.com").problems()


def test_errors_never_contain_credentials() -> None:
    token = gong_token(claims(exp=NOW - 100))
    for cfg, headers in [
        (jwt_config(), {"Authorization": token}),
        (config(tokens=(TOKEN_A, TOKEN_B)), {"Authorization": "Bearer " + TOKEN_A[:-1]}),
        (config(webhook_secrets=(SECRET_A,)), signed_headers(SECRET_B)),
    ]:
        with pytest.raises(AuthError) as info:
            auth(cfg, headers)
        assert_no_secret_in(info.value, TOKEN_A, TOKEN_B, SECRET_A, SECRET_B, token, PUBLIC_PEM)


# ----------------------------------------------------------------- never anything else

_header_values = st.one_of(
    st.text(max_size=60),
    st.sampled_from([f"Bearer {TOKEN_A}", "Bearer a.b.c", "v1,AAAA", "v1,", str(int(NOW)), "1e9", "nan"]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["Authorization", "webhook-id", "webhook-timestamp", "webhook-signature", "X-Other"]),
        _header_values,
    ),
    st.binary(max_size=64),
    st.sampled_from([REQUEST_URL, "", "::::", "http://[bad"]),
    st.booleans(),
)
def test_authenticate_only_ever_raises_auth_error(headers: dict, body: bytes, url: str, insecure: bool) -> None:
    cfg = jwt_config(webhook_secrets=(SECRET_A,), insecure_no_auth=insecure, public_url=None)
    try:
        principal = auth(cfg, headers, body=body, url=url)
    except AuthError as err:
        assert err.status in (401, 403)
        assert_no_secret_in(err, TOKEN_A, SECRET_A)
    else:
        assert principal.method in {"bearer", "standard_webhooks", "gong_jwt", "none"}
