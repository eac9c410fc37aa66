"""Signed senders through the real web app, and a target down past its retry budget."""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone

import jwt
from standardwebhooks import Webhook

from tests.integration.conftest import GONG_PRIVATE_KEY, WEBHOOK_SECRET, Harness, gong_call
from tests.integration.test_pipeline import envelope, landed_everywhere


def test_standard_webhooks_signature_and_replayed_id(harness: Harness) -> None:
    call = gong_call()
    body = json.dumps(envelope(call)).encode()
    msg_id = f"msg_{call['metaData']['id']}"
    now = datetime.now(timezone.utc)
    signature = Webhook(WEBHOOK_SECRET).sign(msg_id, now, body.decode())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": signature}
    r = harness.post(None, raw=body, token=None, headers=dict(headers))
    assert r.status_code == 202, r.text
    assert r.json()["event_id"] == msg_id
    # The sender retries the same message: acknowledged, not enqueued twice.
    again = harness.post(None, raw=body, token=None, headers=dict(headers))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    # A tampered body fails the signature.
    tampered = harness.post(None, raw=body.replace(b"Acme", b"Evil"), token=None,
                            headers=dict(headers, **{"webhook-id": msg_id + "x"}))
    assert tampered.status_code == 403
    # A stale timestamp (10 minutes old) is refused even with a valid signature for it.
    old = datetime.fromtimestamp(now.timestamp() - 600, timezone.utc)
    stale = harness.post(None, raw=body, token=None, headers={
        "webhook-id": msg_id + "-old", "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign(msg_id + "-old", old, body.decode())})
    assert stale.status_code == 403
    harness.wait(lambda: landed_everywhere(harness, call["metaData"]["id"]), 30, "the signed call")


def test_gong_signed_jwt(harness: Harness) -> None:
    call = gong_call()
    body = json.dumps({"callData": call, "isTest": False}).encode()
    url = harness.url + "/webhooks/gong"
    claims = {"webhook_url": url, "body_sha256": hashlib.sha256(body).hexdigest(), "exp": int(time.time()) + 300}
    token = jwt.encode(claims, GONG_PRIVATE_KEY, algorithm="RS256")
    r = harness.post(None, raw=body, token=None, path="/webhooks/gong", headers={"Authorization": token})
    assert r.status_code == 202, r.text
    wrong_url = jwt.encode(dict(claims, webhook_url=url + "/other"), GONG_PRIVATE_KEY, algorithm="RS256")
    assert harness.post(None, raw=body, token=None, path="/webhooks/gong",
                        headers={"Authorization": wrong_url}).status_code == 403
    expired = jwt.encode(dict(claims, exp=int(time.time()) - 60), GONG_PRIVATE_KEY, algorithm="RS256")
    assert harness.post(None, raw=body, token=None, path="/webhooks/gong",
                        headers={"Authorization": expired}).status_code == 403
    harness.wait(lambda: landed_everywhere(harness, call["metaData"]["id"]), 30, "the JWT-signed call")


def test_target_down_past_budget_goes_to_dead_letters_and_replays_once(harness: Harness) -> None:
    stack = harness.stack
    stack.stop("snowflake")
    try:
        call = gong_call()
        cid = call["metaData"]["id"]
        assert harness.post(envelope(call)).status_code == 202
        harness.wait(lambda: harness.redis_doc(cid) and harness.pg_rows(cid), 15, "redis and postgres")
        letters = harness.wait(lambda: harness.dead_letters(document_key=cid, target="snowflake"), 90,
                               "the snowflake dead letter")
        (letter,) = letters
        assert letter["stage"] == "materialize" and letter["attempts"] == int(harness.env["SOPHIA_RETRY_MAX"])
        assert "snowflake" in letter["error"].lower()
    finally:
        stack.start_snowflake()
    out = harness.cli("dlq", "replay", "--all", "--target", "snowflake")
    assert out.returncode == 0, out.stderr
    harness.wait(lambda: harness.sf_rows(cid), 60, "the replayed call in snowflake")
    time.sleep(1)
    assert len(harness.sf_rows(cid)) == 1
    assert harness.dead_letters(document_key=cid, target="snowflake")[0]["status"] == "replayed"
