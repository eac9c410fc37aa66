"""Routing envelopes by a spec's routes, the collection endpoint's documents, and deletes in the event."""
from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from sophia_tasks.core.flowspec import Route, Routes
from sophia_tasks.ingest.envelope import EnvelopeError, UnsupportedMediaType, parse_body, parse_documents
from sophia_tasks.ingest.events import make_event

ROUTES = Routes(routes=(Route("order.*", "orders"), Route("order.cancelled", "orders", "d"),
                        Route("refund", "refunds")), wrappers={"payload": "order.created"})


def canonical(item: Any) -> str:
    return hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()


def test_envelopes_and_wrapped_bodies_follow_the_routes() -> None:
    body = [{"type": "order.created", "data": {"id": 1}}, {"type": "refund", "data": {"id": 2}},
            {"type": "order.cancelled", "data": {"id": 3}}, {"payload": {"id": 4}, "isTest": True}]
    events = parse_body(orjson.dumps(body), "application/json", routes=ROUTES)
    assert [(e.collection, e.op, e.kind, e.is_test) for e in events] == [
        ("orders", None, "envelope", False), ("refunds", None, "envelope", False),
        ("orders", "d", "envelope", False), ("orders", None, "wrapped", True)]


def test_a_spec_without_that_wrapper_does_not_know_the_body() -> None:
    with pytest.raises(EnvelopeError) as err:
        parse_body(b'{"callData": {"metaData": {"id": "1"}}}', None, routes=ROUTES)
    assert err.value.detail == 'expected {"type": "<type>", "data": {...}} or {"payload": {...}}'


def test_unknown_types_name_the_known_ones() -> None:
    with pytest.raises(EnvelopeError) as err:
        parse_body(b'{"type": "invoice.paid", "data": {}}', None, routes=ROUTES)
    assert err.value.to_dict() == {"error": "unknown type", "detail": "no route for type 'invoice.paid'; known "
                                                                      "types: order.*, order.cancelled, refund"}
    with pytest.raises(EnvelopeError) as err:
        parse_body(b'{"type": "x", "data": {}}', None)
    assert "the flow spec routes no type" in str(err.value.detail)


def test_meta_op_d_is_a_delete_in_any_body() -> None:
    gone = {"id": 5, "_meta": {"op": "d"}}
    [routed] = parse_body(orjson.dumps({"type": "order.created", "data": gone}), None, routes=ROUTES)
    assert routed.op == "d"
    [wrapped] = parse_body(orjson.dumps({"payload": gone}), None, routes=ROUTES)
    assert wrapped.op == "d"
    [doc] = parse_documents(orjson.dumps(gone), None, "orders")
    assert doc.op == "d"
    for not_a_delete in ({"_meta": {"op": "u"}}, {"_meta": "d"}, {"op": "d"}):
        assert parse_documents(orjson.dumps(not_a_delete), None, "orders")[0].op is None


def test_documents_single_array_and_ndjson() -> None:
    doc = {"b": 1, "a": [1, 2]}
    [single] = parse_documents(b'{"b": 1,  "a": [1, 2]}', "application/json", "orders")
    assert (single.document, single.collection, single.kind, single.index) == (doc, "orders", "document", None)
    assert single.event_id == canonical(doc)  # canonical JSON, not the raw bytes: reformatting still dedupes
    batch = parse_documents(orjson.dumps([doc, {"c": 3}]), None, "orders")
    assert [e.event_id for e in batch] == [canonical(doc), canonical({"c": 3})]
    assert [e.index for e in batch] == [0, 1]
    lines = parse_documents(b'{"c": 3}\n\n{"d": 4}\n', "application/x-ndjson", "orders", webhook_id="msg_9")
    assert [(e.event_id, e.document) for e in lines] == [("msg_9:0", {"c": 3}), ("msg_9:1", {"d": 4})]
    [headed] = parse_documents(orjson.dumps(doc), None, "orders", webhook_id="msg_1")
    assert headed.event_id == "msg_1"


@pytest.mark.parametrize("raw, content_type, detail", [
    (b"[1]", None, "item 0: the document must be a JSON object, got number"),
    (b'[{"a": 1}, "x"]', None, "item 1: the document must be a JSON object, got string"),
    (b'{"a": 1}\n[2]', "application/x-ndjson", "line 2: each NDJSON line must be a JSON object, got array"),
    (b'"x"', None, "got a JSON string"),
    (b"[]", None, "the array has no items"),
])
def test_documents_that_are_not_objects_are_refused(raw: bytes, content_type: str | None, detail: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        parse_documents(raw, content_type, "orders")
    assert err.value.detail == detail


def test_documents_follow_the_content_type_rules() -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_documents(b'{"a": 1}', "text/html", "orders")
    assert parse_documents(b'{"a": 1}', "application/x-www-form-urlencoded", "orders")[0].document == {"a": 1}


def test_make_event_adds_op_only_for_a_delete() -> None:
    args = ("gong_calls", {"metaData": {"id": "1"}}, "e1", "2026-11-25T10:00:00.000000Z", None, "webhook")
    upsert = make_event(*args)
    assert "op" not in upsert
    assert orjson.dumps(upsert) == orjson.dumps(make_event(*args, op=None))
    assert list(upsert) == ["event_id", "collection", "received_at", "published_at", "source", "is_test", "document"]
    delete = make_event(*args, op="d")
    assert delete["op"] == "d" and {k: v for k, v in delete.items() if k != "op"} == upsert
    with pytest.raises(ValueError, match="op must be 'd'"):
        make_event(*args, op="delete")
