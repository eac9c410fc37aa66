"""Start-up safety of the web app: no credentials, no app (unless explicitly insecure); loopback
bind unless told otherwise; and every credential check in web/auth.py is constant-time."""
from __future__ import annotations

import ast
import base64
import datetime as dt
import hashlib
import hmac
import inspect
import runpy
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks import Webhook

import web.auth
from sophia_tasks.settings import ConfigError, Settings, load_settings
from web import create_app
from web.auth import AuthConfig, AuthError, authenticate

ROOT = Path(__file__).resolve().parents[3]
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
NOW = 1_714_579_200.0
BODY = b'{"type": "call_completed", "data": {"metaData": {"id": "1"}}}'


# --------------------------------------------------------------------------- refuse to start


def test_create_app_without_credentials_raises_a_clear_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        create_app(Settings())
    message = str(info.value)
    assert "SOPHIA_WEBHOOK_TOKENS" in message and "SOPHIA_INSECURE_NO_AUTH=1" in message
    assert "refusing to start" in message


def test_load_settings_with_blank_tokens_still_refuses() -> None:
    """Commas and spaces are not tokens: an env that looks set but holds none still refuses."""
    settings = load_settings({"SOPHIA_WEBHOOK_TOKENS": " , ,", "SOPHIA_INSECURE_NO_AUTH": "0"})
    assert settings.webhook_tokens == ()
    with pytest.raises(ConfigError):
        create_app(settings)


def test_insecure_no_auth_is_an_explicit_opt_in() -> None:
    app = create_app(load_settings({"SOPHIA_INSECURE_NO_AUTH": "1"}))
    assert app.test_client().get("/healthz").status_code == 200


@pytest.mark.parametrize("overrides", [
    {"webhook_tokens": ("a-long-enough-token",)},
    {"webhook_secrets": ("whsec_" + base64.b64encode(b"k" * 32).decode(),)},
])
def test_any_configured_credential_lets_the_app_start(overrides: dict[str, Any]) -> None:
    app = create_app(Settings(**overrides))
    # And an unauthenticated request is refused before anything else happens.
    resp = app.test_client().post("/estuary/webhook", data=BODY, headers={"Content-Type": "application/json"})
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")


# --------------------------------------------------------------------------- bind address


@pytest.mark.parametrize("value, host", [
    (None, "127.0.0.1"), ("", "127.0.0.1"), ("0", "127.0.0.1"), ("no", "127.0.0.1"), ("false", "127.0.0.1"),
    ("1", "0.0.0.0"), ("true", "0.0.0.0"), ("YES", "0.0.0.0"),
])
def test_gunicorn_binds_loopback_unless_bind_all(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                                 host: str) -> None:
    monkeypatch.setenv("PORT", "9123")
    if value is None:
        monkeypatch.delenv("SOPHIA_BIND_ALL", raising=False)
    else:
        monkeypatch.setenv("SOPHIA_BIND_ALL", value)
    conf = runpy.run_path(str(GUNICORN_CONF))
    assert conf["bind"] == f"{host}:9123"


def test_gunicorn_freezes_the_preloaded_heap_before_each_fork() -> None:
    import gc

    conf = runpy.run_path(str(GUNICORN_CONF))
    assert conf["preload_app"] is True
    gc.unfreeze()
    try:
        junk = [{"n": i} for i in range(1000)]  # tracked objects the freeze must take along
        conf["pre_fork"](None, None)
        assert gc.get_freeze_count() >= len(junk)
    finally:
        gc.unfreeze()


# --------------------------------------------------------------------------- constant-time compares


_REAL_COMPARE_DIGEST = hmac.compare_digest


class DigestSpy:
    """Records every hmac.compare_digest call web.auth makes, and answers like the real one."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return _REAL_COMPARE_DIGEST(a, b)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> DigestSpy:
    recorder = DigestSpy()
    monkeypatch.setattr(web.auth.hmac, "compare_digest", recorder)
    return recorder


def config(**overrides: Any) -> AuthConfig:
    base: dict[str, Any] = dict(tokens=(), webhook_secrets=(), gong_public_key_pem=None, insecure_no_auth=False,
                                public_url=None)
    base.update(overrides)
    return AuthConfig(**base)


TOKENS = ("first-token-aaaaaaaa", "second-token-bbbbbbbbbbbbbbbb", "third")


@pytest.mark.parametrize("presented", [TOKENS[0], TOKENS[1], TOKENS[2], "wrong", "x" * 500])
def test_every_token_is_compared_with_compare_digest_on_equal_length_digests(
        spy: DigestSpy, presented: str) -> None:
    """One compare per configured token whether the first, the last or none matches (no early
    exit), each on two 32-byte SHA-256 digests (so token lengths do not leak either)."""
    try:
        authenticate(config(tokens=TOKENS), {"Authorization": f"Bearer {presented}"}, BODY, "http://h/x", "/x")
    except AuthError as err:
        assert err.status == 403 and presented not in TOKENS
    assert len(spy.calls) == len(TOKENS)
    presented_digest = hashlib.sha256(presented.encode()).digest()
    assert {a for a, _ in spy.calls} == {presented_digest}
    assert [b for _, b in spy.calls] == [hashlib.sha256(t.encode()).digest() for t in TOKENS]
    assert all(len(a) == len(b) == 32 for a, b in spy.calls)


def test_every_webhook_signature_is_compared_with_compare_digest(spy: DigestSpy) -> None:
    secrets = tuple("whsec_" + base64.b64encode(bytes([i]) * 32).decode() for i in range(1, 4))
    when = dt.datetime.fromtimestamp(NOW, tz=dt.timezone.utc)
    good = Webhook(secrets[2]).sign("msg_1", when, BODY.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(NOW)),
               "webhook-signature": f"v1,{base64.b64encode(b'z' * 32).decode()} {good}"}
    principal = authenticate(config(webhook_secrets=secrets), headers, BODY, "http://h/x", "/x", now=NOW)
    assert principal.method == "standard_webhooks"
    # Every (secret, presented signature) pair, even after the match.
    assert len(spy.calls) == len(secrets) * 2


def test_jwt_body_hash_is_compared_with_compare_digest(spy: DigestSpy) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    claims = {"webhook_url": "http://h/x", "body_sha256": hashlib.sha256(BODY).hexdigest(), "exp": int(NOW) + 60}
    token = jwt.encode(claims, key, algorithm="RS256")
    assert authenticate(config(gong_public_key_pem=pem), {"Authorization": token}, BODY, "http://h/x", "/x",
                        now=NOW).method == "gong_jwt"
    assert len(spy.calls) == 1


SECRET_NAMES = {"token", "presented", "candidate", "expected", "matched", "secret", "signature_header",
                "encoded", "body_hash", "authorization", "rest"}


def test_no_credential_is_compared_with_ordinary_equality() -> None:
    """Code-level guard: in web/auth.py no ==, !=, in or not-in between two computed values touches
    a name that holds a credential or a digest of one (those go through hmac.compare_digest);
    a test against a literal, such as ``" " not in authorization``, is about shape, not value."""
    tree = ast.parse(inspect.getsource(web.auth))
    offenders = []
    for node in ast.walk(tree):
        sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
        if sides and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops) \
                and not any(isinstance(side, ast.Constant) for side in sides):
            names = {n.id for side in sides for n in ast.walk(side) if isinstance(n, ast.Name)}
            if names & SECRET_NAMES:
                offenders.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert offenders == []
    assert "compare_digest" in inspect.getsource(web.auth._bearer)
    assert "compare_digest" in inspect.getsource(web.auth._standard_webhooks)
    assert "compare_digest" in inspect.getsource(web.auth._gong_jwt)
