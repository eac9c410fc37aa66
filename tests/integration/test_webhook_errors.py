"""Every bad request of the contract gets its status code, never a 5xx."""
from __future__ import annotations

import json

import pytest

from sophia_tasks.dev.stack import free_port
from sophia_tasks.settings import load_settings
from tests.integration.conftest import Harness, gong_call


def test_missing_credentials_401(harness: Harness) -> None:
    r = harness.post({"type": "call_completed", "data": gong_call()}, token=None)
    assert r.status_code == 401
    assert "error" in r.json()


def test_wrong_token_403(harness: Harness) -> None:
    r = harness.post({"type": "call_completed", "data": gong_call()}, token="not-the-token")
    assert r.status_code == 403
    assert "not-the-token" not in r.text


def test_bad_json_400(harness: Harness) -> None:
    r = harness.post(None, raw=b'{"type": "call_completed", "data": {')
    assert r.status_code == 400
    assert r.json()["error"]


@pytest.mark.parametrize("body, fragment", [
    ({"type": "call_completed"}, "data"),
    ({"type": "call_completed", "data": [{"metaData": {"id": "1"}}]}, "data must be a JSON object"),
    ({"type": "call_scheduled", "data": {"metaData": {"id": "1"}}}, "known types: call_completed"),
    ([], ""),
    ("just a string", ""),
])
def test_bad_envelope_400(harness: Harness, body: object, fragment: str) -> None:
    r = harness.post(body)
    assert r.status_code == 400, r.text
    assert fragment in json.dumps(r.json())


def test_non_json_content_type_415(harness: Harness) -> None:
    r = harness.post(None, raw=b"<call/>", headers={"Content-Type": "application/xml"})
    assert r.status_code == 415
    assert r.json()["error"]


def test_oversized_body_413(harness: Harness) -> None:
    big = gong_call()
    big["content"]["brief"] = "x" * (300 * 1024)
    r = harness.post({"type": "call_completed", "data": big})
    assert r.status_code == 413
    assert r.json()["error"]


def test_unknown_document_404(harness: Harness) -> None:
    r = harness.read("/v1/collections/gong_calls_enriched/documents/999999999999")
    assert r.status_code == 404
    r = harness.read("/v1/collections/nope/documents/1")
    assert r.status_code == 404


def test_broker_down_answers_503_with_retry_after(harness: Harness) -> None:
    """A web app whose broker is unreachable must refuse, not accept and lose."""
    from web import create_app

    dead_port = free_port()
    settings = load_settings().with_overrides(broker_url=f"redis://127.0.0.1:{dead_port}/0")
    app = create_app(settings)
    client = app.test_client()
    call = gong_call()
    accepted_before = harness.counter("events_accepted", collection="gong_calls")
    resp = client.post("/estuary/webhook", data=json.dumps({"type": "call_completed", "data": call}),
                       headers={"Authorization": f"Bearer {settings.webhook_tokens[0].reveal()}",
                                "Content-Type": "application/json"})
    assert resp.status_code == 503
    assert resp.headers["Retry-After"]
    # Counted with the dedupe claim, taken back with it: a refused event is not "accepted".
    assert settings.redis_url == harness.env["SOPHIA_REDIS_URL"]  # the counters this test reads
    assert harness.counter("events_accepted", collection="gong_calls") == accepted_before
    # The refused event was not remembered as seen: the sender's retry is accepted by a healthy app.
    ok = harness.post({"type": "call_completed", "data": call})
    assert ok.status_code == 202, ok.text
    assert harness.counter("events_accepted", collection="gong_calls") == accepted_before + 1


def test_rate_limit_per_credential_429_with_retry_after(harness: Harness) -> None:
    from web import create_app

    settings = load_settings().with_overrides(rate_limit_per_minute=3)
    client = create_app(settings).test_client()
    token_a, token_b = settings.webhook_tokens[0].reveal(), settings.webhook_tokens[1].reveal()

    def post(token: str) -> object:
        body = json.dumps({"type": "call_completed", "data": gong_call()})
        return client.post("/estuary/webhook", data=body, headers={"Authorization": f"Bearer {token}",
                                                                    "Content-Type": "application/json"})

    # Four requests in one minute window must meet a 429; a window boundary may reset it once.
    limited = None
    for _ in range(2):
        codes = [post(token_a) for _ in range(4)]
        refused = [r for r in codes if r.status_code == 429]
        if refused:
            limited = refused[0]
            break
    assert limited is not None
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    assert limited.get_json()["error"] == "rate limited"
    # Another credential has its own budget.
    assert post(token_b).status_code == 202


def test_a_counter_that_cannot_count_costs_the_statistic_never_the_event(harness: Harness) -> None:
    """The accept script counts last and tolerates a counter it cannot increment: the event is still
    claimed, on the broker, answered 202 and materialized; a retry is still a duplicate."""
    from sophia_tasks.observe.stats import field

    key = field("events_accepted", {"collection": "gong_calls"})
    before = harness.cache.hget("sophia:stats:counters", key)
    harness.cache.hset("sophia:stats:counters", key, "not a number")
    try:
        call = gong_call()
        body = {"type": "call_completed", "id": f"uncountable-{call['metaData']['id']}", "data": call}
        r = harness.post(body)
        assert r.status_code == 202, r.text
        assert harness.cache.hget("sophia:stats:counters", key) == b"not a number"
        again = harness.post(body)
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        harness.wait(lambda: harness.redis_doc(call["metaData"]["id"]), what="the uncounted event in Redis")
    finally:
        if before is None:
            harness.cache.hdel("sophia:stats:counters", key)
        else:
            harness.cache.hset("sophia:stats:counters", key, before)


def test_accepted_events_are_counted_in_whole_numbers(harness: Harness) -> None:
    before = harness.counter("events_accepted", collection="gong_calls")
    assert harness.post({"type": "call_completed", "data": gong_call()}).status_code == 202
    assert harness.post([{"type": "call_completed", "data": gong_call()} for _ in range(3)]).status_code == 202
    assert harness.counter("events_accepted", collection="gong_calls") == before + 4
