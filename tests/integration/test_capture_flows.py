"""Flows declared in the spec alone, end to end on the session's stack.

The session runs on tests/fixtures/flows/test_flow.yaml: the shipped flow plus ``test_events``, a
collection that exists only there (an inline JSON Schema, the composite key ``[/tenant, /id]``,
routes ``test.*``, and bindings straight from the collection to every target, no derivation). The
shipped second flow, ``hubspot_deals``, is checked here too.
"""
from __future__ import annotations

import json
import random
import string
import uuid
from typing import Any

from tests.integration.conftest import Harness

EVENTS_PATH = "/v1/collections/test_events/events"


def tenant() -> str:
    """A tenant of its own per test (the schema wants lower-case letters), so keys never collide."""
    return "".join(random.choices(string.ascii_lowercase, k=12))


def landed(harness: Harness, key: str) -> dict[str, Any] | None:
    """The document when Redis, PostgreSQL and Snowflake all have it (the bindings of test_events), else None."""
    cached = harness.redis_document(f"sophia:test_events:{key}")
    if cached is None:
        return None
    if harness.pg_document("test_events", "event_key", key) is None:
        return None
    if harness.sf_document("TEST_EVENTS", "EVENT_KEY", key) is None:
        return None
    return cached


def test_documents_captured_by_route_and_by_endpoint_land_in_every_target(harness: Harness) -> None:
    t = tenant()
    docs = [{"tenant": t, "id": i, "name": f"doc {i}", "score": i / 2, "tags": ["a"]} for i in range(1, 7)]

    single = harness.post(docs[0], path=EVENTS_PATH)
    assert single.status_code == 202, single.text
    assert set(single.json()) == {"status", "event_id"}

    array = harness.post(docs[1:3], path=EVENTS_PATH, headers={"webhook-id": f"msg-{t}"})
    assert array.status_code == 202, array.text
    assert array.json()["event_ids"] == [f"msg-{t}:0", f"msg-{t}:1"]

    ndjson = b"\n".join(json.dumps(d).encode() for d in docs[3:5])
    lines = harness.post(None, path=EVENTS_PATH, raw=ndjson, headers={"Content-Type": "application/x-ndjson"})
    assert lines.status_code == 202, lines.text
    assert len(lines.json()["event_ids"]) == 2

    routed = harness.post({"type": "test.created", "data": docs[5]})
    assert routed.status_code == 202, routed.text

    # The same document again: its id is the SHA-256 of its canonical JSON, so it is a duplicate.
    again = harness.post(dict(reversed(list(docs[0].items()))), path=EVENTS_PATH)
    assert again.status_code == 200 and again.json() == {"status": "duplicate",
                                                          "event_id": single.json()["event_id"]}

    for doc in docs:
        key = f"{t}:{doc['id']}"
        found = harness.wait(lambda key=key: landed(harness, key), 60, f"{key} in every target")
        assert {k: v for k, v in found.items() if k != "_meta"} == doc
        assert found["_meta"]["collection"] == "test_events"
    conn = harness.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT event_key, name, score FROM test_events WHERE event_key = %s", (f"{t}:2",))
            assert cur.fetchone() == (f"{t}:2", "doc 2", 1.0)
    finally:
        conn.close()
    assert harness.counter("events_accepted", collection="test_events") >= 6


def test_a_document_failing_its_json_schema_is_dead_lettered_with_every_error(harness: Harness) -> None:
    t = tenant()
    bad = {"tenant": t, "id": 0, "name": "x" * 41, "score": "high", "tags": ["ok", 1, None]}
    resp = harness.post(bad, path=EVENTS_PATH)
    assert resp.status_code == 202, resp.text
    (letter,) = harness.wait(lambda: harness.dead_letters(event_id=resp.json()["event_id"]), 60, "the dead letter")
    assert letter["stage"] == "validate" and letter["collection"] == "test_events"
    assert letter["document_key"] == f"{t}:0"
    assert set(letter["details"]) == {"/id", "/name", "/score", "/tags/1", "/tags/2"}
    assert "is less than the minimum of 1" in letter["details"]["/id"][0]
    assert "5 field error(s)" in letter["error"]
    assert letter["payload"]["document"] == bad
    assert harness.redis_document(f"sophia:test_events:{t}:0") is None


def test_a_document_without_its_key_is_dead_lettered(harness: Harness) -> None:
    """The schema of test_events does not require the key: the key rule is the collection's own."""
    t = tenant()
    resp = harness.post({"type": "test.created", "data": {"tenant": t, "name": "no id"}})
    assert resp.status_code == 202, resp.text
    (letter,) = harness.wait(lambda: harness.dead_letters(event_id=resp.json()["event_id"]), 60, "the dead letter")
    assert letter["stage"] == "validate" and letter["document_key"] is None
    assert list(letter["details"]) == ["/tenant, /id"]
    assert "the key is missing" in letter["error"]


def test_unknown_types_and_collections_are_400_naming_the_known_ones_and_nothing_is_enqueued(
        harness: Harness) -> None:
    t = tenant()
    good = {"type": "test.created", "id": f"evt-{t}", "data": {"tenant": t, "id": 1, "name": "kept"}}
    before = harness.counter("events_accepted", collection="test_events")

    resp = harness.post([good, {"type": "meeting.booked", "data": {}}])
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "unknown type"
    detail = resp.json()["detail"]
    assert detail.startswith("item 1: no route for type 'meeting.booked'; known types: ")
    assert all(t in detail for t in ("call_completed", "call_deleted", "deal.*", "test.*", "test.removed"))

    for name in ("meetings", "gong_calls_enriched"):
        resp = harness.post({"tenant": t, "id": 2, "name": "x"}, path=f"/v1/collections/{name}/events")
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"] == "unknown collection"
        assert resp.json()["detail"].endswith("known collections: gong_calls, hubspot_deals, test_events")

    # Nothing of the refused batch was enqueued: its good item's id was never claimed (a claim would make this
    # a duplicate) nor counted, and the item sent alone is accepted and lands.
    assert harness.counter("events_accepted", collection="test_events") == before
    alone = harness.post(good)
    assert alone.status_code == 202 and alone.json()["status"] == "accepted", alone.text
    harness.wait(lambda: landed(harness, f"{t}:1"), 60, "the item sent alone")


def test_the_shipped_deals_flow_end_to_end(harness: Harness) -> None:
    """hubspot_deals: routed by deal.* at the webhook and posted to its endpoint; masked; in every target."""
    portal = random.randint(10**6, 10**7)
    deal = {"portalId": portal, "dealId": "4001",
            "properties": {"dealname": "Acme - 50 seats", "amount": 12000, "dealstage": "appointmentscheduled",
                           "closedate": "2027-01-15T00:00:00Z", "ownerEmail": "owner@sophia.example"},
            "contacts": [{"id": "1", "name": "Carl", "email": "carl@acme.com", "phone": "+1 415 555 0199"}]}
    other = dict(deal, dealId="4002", properties=dict(deal["properties"], dealname="Acme - renewal"))
    assert harness.post({"type": "deal.creation", "data": deal}).status_code == 202
    resp = harness.post([other], path="/v1/collections/hubspot_deals/events",
                        headers={"webhook-id": f"deals-{uuid.uuid4().hex}"})
    assert resp.status_code == 202, resp.text

    for d in (deal, other):
        key = f"{portal}:{d['dealId']}"
        cached = harness.wait(lambda key=key: harness.redis_document(f"sophia:deals:{key}"), 60, f"deal {key}")
        assert cached["properties"]["dealname"] == d["properties"]["dealname"]
        assert cached["properties"]["ownerEmail"] == "***@sophia.example"
        assert cached["contacts"][0]["email"] == "***@acme.com"
        assert cached["contacts"][0]["phone"] == "***-***-**99"
        assert 0 < harness.cache.ttl(f"sophia:deals:{key}") <= 21600
        row = harness.wait(lambda key=key: harness.pg_document("hubspot_deals", "deal_key", key), 30, "the PG row")
        assert row["contacts"][0]["email"] == "***@acme.com"
        sf = harness.wait(lambda key=key: harness.sf_document("HUBSPOT_DEALS", "DEAL_KEY", key), 60, "the SF row")
        assert sf["properties"]["dealname"] == d["properties"]["dealname"]
    conn = harness.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT portal_id, deal_id, deal_name, stage, amount FROM hubspot_deals WHERE deal_key = %s",
                        (f"{portal}:4001",))
            assert cur.fetchone() == (portal, "4001", "Acme - 50 seats", "appointmentscheduled", 12000.0)
    finally:
        conn.close()
    # A deal failing the shipped JSON Schema is dead-lettered with its errors.
    bad = harness.post({"type": "deal.propertyChange", "data": {"portalId": portal, "dealId": "x-1"}})
    assert bad.status_code == 202
    (letter,) = harness.wait(lambda: harness.dead_letters(event_id=bad.json()["event_id"]), 60, "the dead letter")
    assert set(letter["details"]) == {"", "/dealId"}  # "": 'properties' is a required property
