"""Nobody let in, nothing executed, nothing leaked: auth edge cases through the real web app,
SQL and Redis injection through document fields, and credentials never in logs, /metrics,
Sentry events or dead letters.

What test_auth_and_budget.py / test_webhook_errors.py already cover (a good signature, a replayed
id with the same body, a tampered body, a stale timestamp, a good/expired/wrong-URL Gong JWT,
401/403 for bearer tokens, the rate limit) is not repeated.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks import Webhook

from tests.integration.conftest import (
    GONG_PRIVATE_KEY,
    GONG_PUBLIC_PEM,
    READ_TOKEN,
    TOKEN,
    TOKEN2,
    WEBHOOK_SECRET,
    Harness,
    another_web_app,
    gong_call,
)
from tests.integration.test_pipeline import envelope, landed_everywhere

GONG_PATH = "/webhooks/gong"


def signed(body: bytes, msg_id: str, when: datetime, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` as the sender would compute them."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode())}


def gong_claims(harness: Harness, body: bytes, **overrides: Any) -> dict[str, Any]:
    claims = {"webhook_url": harness.url + GONG_PATH, "body_sha256": hashlib.sha256(body).hexdigest(),
              "exp": int(time.time()) + 300}
    claims.update(overrides)
    return claims


def post_jwt(harness: Harness, body: bytes, token: str) -> Any:
    return harness.post(None, raw=body, token=None, path=GONG_PATH, headers={"Authorization": token})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def wait_for_marker(harness: Harness) -> None:
    """Everything posted before this call has been through the pipeline once it has landed."""
    marker = gong_call()
    assert harness.post(envelope(marker)).status_code == 202
    harness.wait(lambda: landed_everywhere(harness, marker["metaData"]["id"]), 60, "a marker call")


# ----------------------------------------------------------------------------- auth


def test_token_rotation_both_tokens_accepted_at_once(harness: Harness) -> None:
    """During a rotation SOPHIA_WEBHOOK_TOKENS lists the old and the new token; both work, a
    near-miss of either does not."""
    calls = [gong_call(), gong_call()]
    for token, call in zip((TOKEN, TOKEN2), calls, strict=True):
        resp = harness.post(envelope(call), token=token)
        assert resp.status_code == 202, resp.text
    for near_miss in (TOKEN + TOKEN2, f"{TOKEN},{TOKEN2}", TOKEN2[:-1], TOKEN.upper(), f" {TOKEN}x"):
        assert harness.post(envelope(gong_call()), token=near_miss).status_code == 403, near_miss
    for call in calls:
        harness.wait(lambda call=call: landed_everywhere(harness, call["metaData"]["id"]), 60,
                     "a call sent with each token")


def test_standard_webhooks_future_timestamp_refused(harness: Harness) -> None:
    """A signature stamped 10 minutes ahead is refused (replay window ±5 min); 4 minutes ahead
    (a sender's clock a little fast) is fine."""
    body = json.dumps(envelope(gong_call())).encode()
    now = time.time()
    ahead = datetime.fromtimestamp(now + 600, timezone.utc)
    resp = harness.post(None, raw=body, token=None, headers=signed(body, f"msg_{uuid.uuid4().hex}", ahead))
    assert resp.status_code == 403 and "future" in resp.json()["error"]
    near = datetime.fromtimestamp(now + 240, timezone.utc)
    assert harness.post(None, raw=body, token=None,
                        headers=signed(body, f"msg_{uuid.uuid4().hex}", near)).status_code == 202


def test_replayed_webhook_id_with_a_different_body_is_a_duplicate(harness: Harness) -> None:
    """The sender's message id is the event id: a second, validly signed body under the same id is
    acknowledged as a duplicate and never enqueued, so its call never lands."""
    first, second = gong_call(), gong_call()
    msg_id = f"msg_{uuid.uuid4().hex}"
    body1 = json.dumps(envelope(first)).encode()
    body2 = json.dumps(envelope(second)).encode()
    now = datetime.now(timezone.utc)
    r1 = harness.post(None, raw=body1, token=None, headers=signed(body1, msg_id, now))
    assert r1.status_code == 202 and r1.json()["event_id"] == msg_id
    r2 = harness.post(None, raw=body2, token=None, headers=signed(body2, msg_id, now))
    assert r2.status_code == 200, r2.text
    assert r2.json() == {"status": "duplicate", "event_id": msg_id}
    harness.wait(lambda: landed_everywhere(harness, first["metaData"]["id"]), 60, "the first body")
    wait_for_marker(harness)
    sid = second["metaData"]["id"]
    assert harness.redis_doc(sid) is None and harness.pg_rows(sid) == [] and harness.sf_rows(sid) == []


def test_gong_jwt_algorithm_confusion_and_missing_claims_refused(harness: Harness) -> None:
    """RS256 only: ``alg: none`` and an HS256 token keyed with the public PEM (the classic
    confusion attack) are refused, as are a token without ``exp``, a body that does not match
    ``body_sha256`` and a token signed by another key."""
    call = gong_call()
    body = json.dumps({"callData": call, "isTest": False}).encode()
    claims = gong_claims(harness, body)

    none_token = jwt.encode(claims, None, algorithm="none")
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims).encode())
    mac = hmac.new(GONG_PUBLIC_PEM.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    hs256_token = f"{header}.{payload}.{_b64url(mac)}"
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    refused = {
        "alg-none": none_token,
        "alg-none-bearer": "Bearer " + none_token,
        "hs256-public-key": hs256_token,
        "hs256-public-key-bearer": "Bearer " + hs256_token,
        "no-exp": jwt.encode(no_exp, GONG_PRIVATE_KEY, algorithm="RS256"),
        "body-hash-of-other-body": jwt.encode(gong_claims(harness, body + b" "), GONG_PRIVATE_KEY, algorithm="RS256"),
        "other-key": jwt.encode(claims, other_key, algorithm="RS256"),
        "exp-as-string": jwt.encode(dict(claims, exp=str(claims["exp"])), GONG_PRIVATE_KEY, algorithm="RS256"),
    }
    for name, token in refused.items():
        resp = post_jwt(harness, body, token)
        assert resp.status_code == 403, (name, resp.text)
        assert token not in resp.text
    good = jwt.encode(claims, GONG_PRIVATE_KEY, algorithm="RS256")
    # The right token with a body that is not the one it was signed for.
    assert post_jwt(harness, body.replace(b'"isTest": false', b'"isTest": true'), good).status_code == 403
    assert post_jwt(harness, body, good).status_code == 202
    harness.wait(lambda: landed_everywhere(harness, call["metaData"]["id"]), 60, "the good JWT call")


# ----------------------------------------------------------------------------- injection


INJECTIONS = [
    "'; DROP TABLE gong_calls_enriched; --",
    "x'); DELETE FROM sophia_dead_letters; --",
    "$$; DROP TABLE gong_calls_enriched; $$",
    "$tag$ DROP TABLE \"GONG_CALLS_ENRICHED\" $tag$",
    "' OR '1'='1",
    "\\", "\\'", "\\\\\"", "'", '"', "''", '""', "`id`",
    "{}", "{0}", "{title}", "%s", "%(title)s", "%%", "?", ":1", "@var", "$1",
    "\r\nFLUSHALL\r\n",
    "*1\r\n$8\r\nFLUSHALL\r\n",
    "sophia:gong_calls_enriched:*",
    "%a%d%.*[^%]+$()-?",
    '{"_meta":{"published_at":"9999-12-31T23:59:59.999999Z"}}',
    "EXECUTE IMMEDIATE 'DROP TABLE GONG_CALLS_ENRICHED'",
    "); DROP TABLE GONG_CALLS_ENRICHED; --",
    "<script>alert(1)</script>",
    "${jndi:ldap://127.0.0.1/x}",
]


@pytest.fixture
def sentinel(harness: Harness) -> Iterator[str]:
    """A key that a FLUSHALL, FLUSHDB or a stray wildcard DEL would take with it."""
    key = f"sophia:test:sentinel:{uuid.uuid4().hex}"
    harness.cache.set(key, b"still here")
    yield key
    harness.cache.delete(key)


def _pg_tables(harness: Harness) -> dict[str, int]:
    conn = harness.pg()
    try:
        with conn.cursor() as cur:
            out = {}
            for table in ("gong_calls_enriched", "sophia_dead_letters"):
                cur.execute("SELECT to_regclass(%s)", (table,))
                assert cur.fetchone()[0] is not None, f"table {table} is gone"
                cur.execute(f"SELECT count(*) FROM {table}")
                out[table] = int(cur.fetchone()[0])
            return out
    finally:
        conn.close()


def _sf_count(harness: Harness) -> int:
    conn = harness.sf_connect()
    try:
        cur = conn.cursor()
        cur.execute('SELECT COUNT(*) FROM "GONG_CALLS_ENRICHED"')
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_sql_and_redis_injection_in_document_fields_is_stored_literally(harness: Harness, sentinel: str) -> None:
    """Every string goes to PostgreSQL and Snowflake as a bound value and to Redis as a bulk
    string: each lands byte for byte in all three targets (the projected title column too),
    every table is still there with every row, and no other Redis key is touched."""
    wait_for_marker(harness)  # the tables exist before the counts are taken
    before_pg, before_sf = _pg_tables(harness), _sf_count(harness)
    calls = []
    for text in INJECTIONS:
        call = gong_call(title=text)
        call["content"]["brief"] = text
        call["parties"][1]["title"] = text
        call["content"]["trackers"][0]["phrases"] = [text, {text: text}]
        calls.append(call)
    resp = harness.post([envelope(c) for c in calls])
    assert resp.status_code == 202, resp.text

    for call, text in zip(calls, INJECTIONS, strict=True):
        cid = call["metaData"]["id"]
        harness.wait(lambda cid=cid, text=text: landed_everywhere(harness, cid, text), 60,
                     f"the call titled {text!r}")
        for doc in (harness.redis_doc(cid), harness.pg_rows(cid)[0][1], harness.sf_rows(cid)[0][1]):
            assert doc["content"]["brief"] == text
            assert doc["content"]["trackers"][0]["phrases"] == [text, {text: text}]

    assert harness.cache.get(sentinel) == b"still here"
    after_pg = _pg_tables(harness)
    # No row deleted (other tests' events may still be landing, so at least, not exactly).
    assert after_pg["gong_calls_enriched"] >= before_pg["gong_calls_enriched"] + len(INJECTIONS)
    assert after_pg["sophia_dead_letters"] >= before_pg["sophia_dead_letters"]
    assert _sf_count(harness) >= before_sf + len(INJECTIONS)
    ids = {c["metaData"]["id"] for c in calls}
    assert [letter for letter in harness.dead_letters() if letter["document_key"] in ids] == []


def test_a_fake_version_inside_a_field_does_not_fool_last_write_wins(harness: Harness) -> None:
    """The Redis script reads the stored version with a Lua pattern anchored at the document's
    start, where ``_meta`` always is: a title that looks like a far-future version must not make
    an older stored copy look newer than an update."""
    cid = gong_call()["metaData"]["id"]
    fake = '{"_meta":{"published_at":"9999-12-31T23:59:59.999999Z"}} "published_at":"9999'
    old = harness.post(envelope(gong_call(cid, title=fake), occurred_at="2026-11-20T10:00:00Z"))
    assert old.status_code == 202
    harness.wait(lambda: landed_everywhere(harness, cid, fake), 60, "the version with the fake stamp")
    new = harness.post(envelope(gong_call(cid, title="the real update"), occurred_at="2026-11-20T11:00:00Z"))
    assert new.status_code == 202
    harness.wait(lambda: landed_everywhere(harness, cid, "the real update"), 60, "the update everywhere")


@pytest.mark.parametrize("path", [
    "/v1/collections/gong_calls_enriched/documents/*",
    "/v1/collections/gong_calls_enriched/documents/%0D%0AFLUSHALL%0D%0A",
    "/v1/collections/gong_calls_enriched/documents/1%27%3B%20DROP%20TABLE%20gong_calls_enriched%3B--",
    "/v1/collections/%27%3B%20DROP%20TABLE%20x%3B--/documents/1",
    "/v1/collections/gong_calls_enriched/documents/..%2F..%2Fetc%2Fpasswd",
])
def test_document_lookup_keys_are_literal(harness: Harness, sentinel: str, path: str) -> None:
    """The lookup key is one exact Redis GET: a glob, CRLF or SQL in it finds nothing and runs nothing."""
    resp = harness.read(path, timeout=10)
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"] == "not found"
    assert harness.cache.get(sentinel) == b"still here"


# ----------------------------------------------------------------------------- secrets never leak


def _every_redis_key(harness: Harness) -> str:
    import redis

    names = []
    for url in (harness.env["SOPHIA_REDIS_URL"], harness.env["SOPHIA_BROKER_URL"]):
        client = redis.Redis.from_url(url)
        names += [k.decode("utf-8", "replace") for k in client.scan_iter(count=1000)]
        for key in client.scan_iter(match="sophia:stats:*", count=1000):
            if client.type(key) == b"hash":
                names += [f.decode("utf-8", "replace") for f in client.hkeys(key)]
    return "\n".join(names)


def _dead_letter_text(harness: Harness) -> str:
    conn = harness.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(string_agg(row_to_json(d)::text, E'\\n'), '') FROM sophia_dead_letters d")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def test_credentials_never_in_logs_metrics_keys_or_dead_letters(harness: Harness) -> None:
    """Send good and bad credentials of every kind, force auth errors and a dead letter (a bad call
    sent with a valid token and one with a valid signature), then look for every credential value
    in the web and worker logs, /metrics, every Redis key and the dead-letter table."""
    wrong_tokens = [TOKEN + "-wrong", "Zz" + TOKEN2[2:], f"{uuid.uuid4().hex}-guess"]
    basic = "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()
    secret_b64 = WEBHOOK_SECRET.split("_", 1)[1]
    other_secret = "whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode()
    bad_call = gong_call(title=123, duration="long")  # schema-invalid: dead-lettered
    bad_cid = bad_call["metaData"]["id"]
    body = json.dumps(envelope(bad_call)).encode()
    now = datetime.now(timezone.utc)
    good_sig = signed(body, f"msg_{uuid.uuid4().hex}", now)
    bad_sig = signed(body, f"msg_{uuid.uuid4().hex}", now, secret=other_secret)
    stale_sig = signed(body, f"msg_{uuid.uuid4().hex}", datetime.fromtimestamp(now.timestamp() - 900, timezone.utc))
    gong_body = json.dumps({"callData": gong_call(), "isTest": True}).encode()
    good_jwt = jwt.encode(gong_claims(harness, gong_body), GONG_PRIVATE_KEY, algorithm="RS256")
    expired_jwt = jwt.encode(gong_claims(harness, gong_body, exp=int(time.time()) - 600), GONG_PRIVATE_KEY,
                             algorithm="RS256")

    assert harness.post(envelope(bad_call), token=TOKEN2).status_code == 202
    assert harness.post(envelope(gong_call()), token=TOKEN).status_code == 202
    for token in wrong_tokens + [WEBHOOK_SECRET, secret_b64]:
        assert harness.post(envelope(gong_call()), token=token).status_code == 403
    assert harness.post(envelope(gong_call()), token=None, headers={"Authorization": basic}).status_code == 401
    assert harness.post(None, raw=body, token=None, headers=good_sig).status_code == 202
    assert harness.post(None, raw=body, token=None, headers=bad_sig).status_code == 403
    assert harness.post(None, raw=body, token=None, headers=stale_sig).status_code == 403
    assert post_jwt(harness, gong_body, good_jwt).status_code == 202
    assert post_jwt(harness, gong_body, expired_jwt).status_code == 403
    assert post_jwt(harness, gong_body + b"\n", good_jwt).status_code == 403
    assert harness.post(None, raw=b"{broken", token=TOKEN).status_code == 400
    letters = harness.wait(lambda: harness.dead_letters(document_key=bad_cid), 60, "the dead letter")
    assert len(letters) >= 1
    wait_for_marker(harness)

    metrics = harness.read("/metrics", timeout=30)
    assert metrics.status_code == 200 and "sophia_dead_letters" in metrics.text
    places = {
        "web log": harness.stack.processes["web"].log_path.read_text(errors="replace"),
        "worker log": harness.stack.processes["worker"].log_path.read_text(errors="replace"),
        "/metrics": metrics.text,
        "redis keys": _every_redis_key(harness),
        "dead letters": _dead_letter_text(harness),
    }
    assert "ValidationError" in places["dead letters"] or "field error" in places["dead letters"]
    secrets = {
        "TOKEN": TOKEN, "TOKEN2": TOKEN2, "webhook secret": WEBHOOK_SECRET, "its base64 part": secret_b64,
        "other secret": other_secret, "basic header": basic.split()[1],
        "good signature": good_sig["webhook-signature"].split(",", 1)[1],
        "bad signature": bad_sig["webhook-signature"].split(",", 1)[1],
        "good jwt": good_jwt, "good jwt signature": good_jwt.rsplit(".", 1)[1],
        "expired jwt": expired_jwt,
        **{f"wrong token {i}": t for i, t in enumerate(wrong_tokens)},
    }
    leaks = [f"{name} in {where}" for where, text in places.items() for name, value in secrets.items()
             if value in text]
    assert leaks == []


def test_sentry_events_carry_no_credentials(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unhandled error in the webhook, whose message repeats a credential (as driver errors do)
    and whose frames hold the settings, reaches Sentry with every credential filtered out."""
    import sentry_sdk
    from sentry_sdk.transport import Transport

    from sophia_tasks.settings import load_settings
    from web import create_app
    from web.services import Services

    captured: list[bytes] = []

    class Capture(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            captured.append(envelope.serialize())

        def flush(self, timeout: float, callback: Any = None) -> None:
            return None

        def kill(self) -> None:
            return None

    real_init = sentry_sdk.init
    monkeypatch.setattr(sentry_sdk, "init", lambda *a, **kw: real_init(*a, transport=Capture(), **kw))

    def failing_claim(self: Services, events: list[dict], collection: str, credential: str | None = None) -> list[bool]:
        raise RuntimeError(f"dedupe store refused AUTH for 'Authorization: Bearer {TOKEN}' "
                           f"(secret {WEBHOOK_SECRET}, token2 {TOKEN2})")

    monkeypatch.setattr(Services, "accept", failing_claim)
    settings = load_settings().with_overrides(sentry_dsn="http://public@127.0.0.1:9/1")
    try:
        client = create_app(settings).test_client()
        body = json.dumps(envelope(gong_call())).encode()
        resp = client.post("/estuary/webhook", data=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                                    "Content-Type": "application/json",
                                                                    "X-Api-Key": TOKEN2})
        assert resp.status_code == 500 and resp.get_json() == {"error": "internal error"}
        sentry_sdk.flush(timeout=5)
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
    text = b"\n".join(captured).decode("utf-8", "replace")
    assert "RuntimeError" in text and "dedupe store refused AUTH" in text  # the event did go out
    assert "[Filtered]" in text  # with the credentials it carried replaced, not merely absent
    for name, value in {"TOKEN": TOKEN, "TOKEN2": TOKEN2, "secret": WEBHOOK_SECRET,
                        "secret base64": WEBHOOK_SECRET.split("_", 1)[1]}.items():
        assert value not in text, f"{name} reached Sentry"


@pytest.mark.parametrize("path", ["/v1/collections/gong_calls_enriched/documents/1", "/metrics"])
def test_reads_need_a_read_token(harness: Harness, path: str) -> None:
    """401 without credentials, 403 with a wrong token, a webhook token, a signature or a Basic header;
    200 (or 404 for an absent document) with a read token."""
    assert harness.read(path, token=None).status_code == 401
    assert harness.read(path, token=None).headers["WWW-Authenticate"].startswith("Bearer")
    for token in (READ_TOKEN + "x", TOKEN, TOKEN2):
        refused = harness.read(path, token=token)
        assert refused.status_code == 403 and "read token" in refused.json()["error"], (token, refused.text)
    basic = "Basic " + base64.b64encode(f"user:{READ_TOKEN}".encode()).decode()
    assert harness.read(path, token=None, headers={"Authorization": basic}).status_code == 401
    signed_only = signed(b"", f"msg_{uuid.uuid4().hex}", datetime.now(timezone.utc))
    assert harness.read(path, token=None, headers=signed_only).status_code == 401
    assert harness.read(path).status_code in (200, 404)


def test_reads_count_against_the_rate_limit(harness: Harness) -> None:
    with another_web_app(harness, SOPHIA_RATE_LIMIT_PER_MINUTE="2") as url:
        read = {"Authorization": f"Bearer {READ_TOKEN}"}
        answers = [requests.get(url + "/metrics", headers=read, timeout=30) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["Retry-After"]) >= 1
