"""parse_body: every accepted body form, routing by the shipped spec's routes, every rejection, event-id
rules, and a fuzz test. (Routing with other specs and parse_documents: test_routing.py.)"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sophia_tasks.flows import load_spec
from sophia_tasks.ingest import envelope as envelope_module
from sophia_tasks.ingest.envelope import (
    MAX_BATCH_ITEMS,
    EnvelopeError,
    Event,
    UnsupportedMediaType,
    parse_json_bytes,
)
from sophia_tasks.settings import DEFAULT_FLOW

ROUTES = load_spec(DEFAULT_FLOW).routes


def parse_body(raw: Any, content_type: str | None, webhook_id: str | None = None) -> list[Event]:
    """The webhook's parse, routed by the shipped flow spec."""
    return envelope_module.parse_body(raw, content_type, webhook_id, ROUTES)


CALL = {"metaData": {"id": "7782342274025937895", "title": "Demo"}, "parties": []}
FORM_URLENCODED = "application/x-www-form-urlencoded"  # what `curl -d` sends


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_sha(item: Any) -> str:
    return sha(orjson.dumps(item, option=orjson.OPT_SORT_KEYS))


def envelope(call: Any = CALL, **extra: Any) -> dict:
    return {"type": "call_completed", "data": call, **extra}


def automation(call: Any = CALL, is_test: Any = False) -> dict:
    return {"callData": call, "isTest": is_test}


def error_of(raw: bytes, content_type: str | None = "application/json", webhook_id: str | None = None) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as info:
        parse_body(raw, content_type, webhook_id)
    return info.value


# ----------------------------------------------------------------- accepted forms


def test_seed_curl_line_without_json_content_type() -> None:
    """The seed's curl -d sends application/x-www-form-urlencoded; it must still parse."""
    raw = b'{"type": "call_completed", "data": {"metaData": {"id": "123"}}}'
    [event] = parse_body(raw, FORM_URLENCODED)
    assert event == Event(
        event_id=sha(raw), document={"metaData": {"id": "123"}}, is_test=False, occurred_at=None, kind="envelope",
        collection="gong_calls"
    )
    assert event.index is None


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        FORM_URLENCODED,
        "text/plain",
        "text/plain; charset=utf-8",
        "application/octet-stream",
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/cloudevents+json",
        "application/vnd.gong+json; charset=utf-8",
        "text/json",
    ],
)
def test_json_content_types(content_type: str | None) -> None:
    [event] = parse_body(dumps(envelope()), content_type)
    assert event.document == CALL


def test_call_updated_is_accepted() -> None:
    [event] = parse_body(dumps({"type": "call_updated", "data": CALL}), None)
    assert event.kind == "envelope"


def test_gong_automation_form() -> None:
    raw = dumps(automation(is_test=True))
    [event] = parse_body(raw, "application/json")
    assert (event.kind, event.is_test, event.document, event.event_id) == ("wrapped", True, CALL, sha(raw))


def test_gong_automation_is_test_defaults_to_false() -> None:
    [event] = parse_body(dumps({"callData": CALL}), None)
    assert event.is_test is False


def test_call_is_kept_unchanged_with_unicode_and_control_characters() -> None:
    call = {
        "metaData": {"id": "1", "title": "Réunion 🚀 \u0000\t\n\u202e 李"},
        "content": {"brief": "line1\nline2\r\n\u0007"},
        "extra": {"unknown": [1, 2.5, None, True]},
    }
    [event] = parse_body(dumps(envelope(call)), None)
    assert event.document == call


def test_bom_is_tolerated() -> None:
    [event] = parse_body(b"\xef\xbb\xbf" + dumps(envelope()), None)
    assert event.document == CALL


def test_json_array_batch_mixes_forms() -> None:
    items = [envelope(), automation(is_test=True), {"type": "call_updated", "id": "evt-9", "data": CALL}]
    events = parse_body(dumps(items), "application/json")
    assert [e.kind for e in events] == ["envelope", "wrapped", "envelope"]
    assert [e.index for e in events] == [0, 1, 2]
    assert events[0].event_id == canonical_sha(items[0])
    assert events[1].event_id == canonical_sha(items[1])
    assert events[2].event_id == "evt-9"


def test_batch_of_one_is_still_a_batch() -> None:
    [event] = parse_body(dumps([envelope()]), None)
    assert event.index == 0


def test_ndjson_content_type() -> None:
    lines = [envelope(), automation()]
    raw = b"\n".join(dumps(x) for x in lines) + b"\n\n"
    events = parse_body(raw, "application/x-ndjson")
    assert [e.document for e in events] == [CALL, CALL]
    assert [e.index for e in events] == [0, 1]
    assert events[1].event_id == canonical_sha(lines[1])


def test_ndjson_single_line_and_crlf() -> None:
    [event] = parse_body(dumps(envelope()) + b"\r\n", "application/x-ndjson; charset=utf-8")
    assert event.index == 0
    events = parse_body(dumps(envelope()) + b"\r\n\r\n" + dumps(automation()) + b"\r\n", "application/jsonl")
    assert len(events) == 2


def test_ndjson_sniffed_without_content_type() -> None:
    raw = dumps(envelope()) + b"\n" + dumps(automation())
    events = parse_body(raw, None)
    assert [e.kind for e in events] == ["envelope", "wrapped"]


def test_ndjson_not_sniffed_when_json_is_declared() -> None:
    raw = dumps(envelope()) + b"\n" + dumps(automation())
    assert error_of(raw, "application/json").message == "body is not valid JSON"


def test_pretty_printed_json_is_json_not_ndjson() -> None:
    raw = json.dumps(envelope(), indent=2).encode()
    [event] = parse_body(raw, None)
    assert event.index is None


def test_broken_pretty_json_reports_the_json_error() -> None:
    raw = json.dumps(envelope(), indent=2).encode()[:-3]
    assert error_of(raw, None).message == "body is not valid JSON"


def test_ndjson_errors_name_the_line() -> None:
    raw = dumps(envelope()) + b"\n\n" + b'{"type": "call_completed"}'
    err = error_of(raw, "application/x-ndjson")
    assert err.detail == "line 3: data is missing"
    err = error_of(dumps(envelope()) + b"\n{nope", "application/x-ndjson")
    assert err.message == "body is not valid JSON" and err.detail.startswith("line 2: ")
    err = error_of(dumps(envelope()) + b"\n[1]", "application/x-ndjson")
    assert err.detail.startswith("line 2: each NDJSON line must be a JSON object")


# ----------------------------------------------------------------- occurred_at


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T09:00:00-07:00", "2024-05-01T16:00:00+00:00"),
        ("2024-05-01T16:00:00Z", "2024-05-01T16:00:00+00:00"),
        ("2024-05-01T16:00:00", "2024-05-01T16:00:00+00:00"),
        (1714579200, "2024-05-01T16:00:00+00:00"),
        (1714579200.5, "2024-05-01T16:00:00.500000+00:00"),
        (None, None),
    ],
)
def test_occurred_at_is_normalized_to_utc(value: Any, expected: str | None) -> None:
    [event] = parse_body(dumps(envelope(occurred_at=value)), None)
    assert event.occurred_at == expected


def test_occurred_at_key_precedence_and_gong_form() -> None:
    body = envelope(timestamp=0, published_at="2024-01-01T00:00:00Z")
    assert parse_body(dumps(body), None)[0].occurred_at == "1970-01-01T00:00:00+00:00"
    body = {**automation(), "published_at": "2024-01-01T00:00:00+01:00"}
    assert parse_body(dumps(body), None)[0].occurred_at == "2023-12-31T23:00:00+00:00"


@pytest.mark.parametrize("value", ["yesterday", True, -1, 1e20, [], {}, "0001-01-01T00:00:00+01:00"])
def test_bad_occurred_at_is_rejected(value: Any) -> None:
    err = error_of(dumps(envelope(occurred_at=value)))
    assert err.message == "invalid envelope" and "occurred_at" in err.detail


# ----------------------------------------------------------------- event ids


def test_event_id_prefers_webhook_id_header() -> None:
    [event] = parse_body(dumps(envelope(id="env-1")), None, webhook_id="msg_123")
    assert event.event_id == "msg_123"


def test_event_id_falls_back_to_envelope_id_then_body_hash() -> None:
    assert parse_body(dumps(envelope(id="env-1")), None)[0].event_id == "env-1"
    raw = dumps(envelope())
    assert parse_body(raw, None)[0].event_id == sha(raw)
    # Raw-body hash: same JSON, different bytes -> different id (as the contract says).
    assert parse_body(b" " + raw, None)[0].event_id == sha(b" " + raw)


def test_empty_webhook_id_header_counts_as_absent() -> None:
    assert parse_body(dumps(envelope(id="e")), None, webhook_id="  ")[0].event_id == "e"


def test_batch_with_webhook_id_numbers_items() -> None:
    items = [envelope(id="a"), automation()]
    events = parse_body(dumps(items), None, webhook_id="msg_1")
    assert [e.event_id for e in events] == ["msg_1:0", "msg_1:1"]
    events = parse_body(b"\n".join(dumps(i) for i in items), "application/x-ndjson", webhook_id="msg_1")
    assert [e.event_id for e in events] == ["msg_1:0", "msg_1:1"]


def test_batch_item_ids_are_stable_across_redeliveries() -> None:
    """The same item in a different batch, with keys in another order, keeps its id."""
    item = {"data": {"metaData": {"title": "t", "id": "5"}}, "type": "call_completed"}
    reordered = {"type": "call_completed", "data": {"metaData": {"id": "5", "title": "t"}}}
    first = parse_body(dumps([envelope(), item]), None)[1].event_id
    second = parse_body(dumps([reordered]), None)[0].event_id
    third = parse_body(dumps(reordered) + b"\n" + dumps(envelope()), "application/x-ndjson")[0].event_id
    assert first == second == third == canonical_sha(item)


@pytest.mark.parametrize(
    ("bad_id", "fragment"),
    [("", "must not be empty"), ("   ", "must not be empty"), ("x" * 201, "at most 200"),
     (17, "must be a string"), (None, "must be a string"), ("a\nb", "control characters")],
)
def test_bad_envelope_ids(bad_id: Any, fragment: str) -> None:
    err = error_of(dumps(envelope(id=bad_id)))
    assert err.message == "invalid event id" and fragment in err.detail


def test_envelope_id_of_200_chars_and_unicode_is_fine() -> None:
    assert parse_body(dumps(envelope(id="é" * 200)), None)[0].event_id == "é" * 200


def test_bad_webhook_id_header() -> None:
    err = error_of(dumps(envelope()), webhook_id="w" * 201)
    assert err.message == "invalid event id" and "webhook-id" in err.detail


# ----------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "application/xml", "text/xml", "multipart/form-data; boundary=x", "image/png",
     "application/pdf", "nonsense", "application/json; charset=utf-16", "application/x-ndjson; charset=latin1"],
)
def test_unsupported_media_types(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        parse_body(dumps(envelope()), content_type)
    assert info.value.status == 415
    assert info.value.message == "unsupported content type"


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b"{'type': 'x'}", b'{"a": NaN}', b"\xff\xfe{}", b'{"a": 1e400}', b'"\\ud800"', b"{}{}"],
)
def test_bad_json(raw: bytes) -> None:
    err = error_of(raw, None)
    assert err.message == "body is not valid JSON" and err.status == 400
    assert err.detail


@pytest.mark.parametrize("raw", [b"", b"   \n\t ", b"\xef\xbb\xbf"])
def test_empty_body(raw: bytes) -> None:
    assert error_of(raw, None).message == "body is empty"
    assert error_of(raw, "application/x-ndjson").message == "body is empty"


@pytest.mark.parametrize("raw", [b"1", b'"s"', b"null", b"true"])
def test_scalar_bodies(raw: bytes) -> None:
    assert error_of(raw).message == "body must be a JSON object or array"


def test_empty_array() -> None:
    assert error_of(b"[]").message == "empty batch"


def test_batch_limits() -> None:
    ok = parse_body(dumps([envelope()] * MAX_BATCH_ITEMS), None)
    assert len(ok) == MAX_BATCH_ITEMS
    err = error_of(dumps([envelope()] * (MAX_BATCH_ITEMS + 1)))
    assert err.message == "batch too large" and "1001" in err.detail
    err = error_of(b"\n".join([dumps(envelope())] * (MAX_BATCH_ITEMS + 1)), "application/x-ndjson")
    assert err.message == "batch too large"


def test_deep_nesting() -> None:
    def nested(depth: int) -> bytes:
        # The call itself sits at depth 3 (body object > data > call); pad the rest in `extra`.
        inner = b"[" * depth + b"]" * depth
        return b'{"type": "call_completed", "data": {"metaData": {"id": "1"}, "extra": ' + inner + b"}}"

    assert parse_body(nested(62), None)  # 2 + 62 = 64 levels: allowed
    err = error_of(nested(63))
    assert err.message == "body is nested too deeply"
    # Beyond orjson's own recursion limit it is simply bad JSON, never a RecursionError.
    assert error_of(b"[" * 5000 + b"]" * 5000).message == "body is not valid JSON"
    assert error_of(b"[" * 100000).message == "body is not valid JSON"
    line = b"\n".join([dumps(envelope()), nested(63)])
    err = error_of(line, "application/x-ndjson")
    assert err.message == "body is nested too deeply" and err.detail.startswith("line 2: ")


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    call = {"metaData": {"id": "1", "title": "[" * 500 + "{" * 500}}
    assert parse_body(dumps(envelope(call)), None)[0].document == call


@pytest.mark.parametrize(
    ("body", "message", "detail"),
    [
        ({"type": "call_scheduled", "data": CALL}, "unknown type",
         "no route for type 'call_scheduled'; known types: call_completed, call_updated, call_deleted, "
         "deal.deletion, deal.*"),
        ({"type": 5, "data": CALL}, "invalid envelope", "type must be a string, got number"),
        ({"data": CALL}, "invalid envelope", "type is missing"),
        ({"type": "call_completed"}, "invalid envelope", "data is missing"),
        ({"type": "call_completed", "data": CALL, "callData": CALL}, "invalid envelope", "has data, callData"),
        ({"hello": "world"}, "invalid envelope", "expected {"),
        ({}, "invalid envelope", "expected {"),
        ({"callData": CALL, "isTest": "true"}, "invalid envelope", "isTest must be true or false"),
        (envelope([]), "invalid document", "data must be a JSON object, got array"),
        (envelope(None), "invalid document", "data must be a JSON object, got null"),
        (automation("call"), "invalid document", "callData must be a JSON object, got string"),
    ],
)
def test_envelope_rejections(body: dict, message: str, detail: str) -> None:
    err = error_of(dumps(body))
    assert err.message == message
    assert detail in err.detail
    assert err.to_dict() == {"error": message, "detail": err.detail}


@pytest.mark.parametrize("call", [
    {}, {"metaData": []}, {"metaData": {"title": "x"}}, {"metaData": {"id": 123}}, {"metaData": {"id": None}},
    {"metaData": {"id": "12ab"}}, {"metaData": {"id": ""}}, {"metaData": {"id": "١٢"}},
])
def test_the_key_and_the_schema_are_not_checked_here(call: dict) -> None:
    """The call id rule is the gong_call schema's (the validate stage dead-letters such a call with every
    error), so a delete carrying only its key, or a call with a bad id, is captured as it came."""
    [event] = parse_body(dumps(envelope(call)), None)
    assert event.document == call and event.collection == "gong_calls" and event.op is None


def test_routes_name_the_collection_and_deletes() -> None:
    deal = {"portalId": 1, "dealId": "2"}
    events = parse_body(dumps([envelope(), {"type": "call_deleted", "data": {"metaData": {"id": "9"}}},
                               {"type": "deal.propertyChange", "data": deal}, {"type": "deal.deletion", "data": deal},
                               automation(), envelope({"metaData": {"id": "5"}, "_meta": {"op": "d"}})]), None)
    assert [(e.collection, e.op, e.kind) for e in events] == [
        ("gong_calls", None, "envelope"), ("gong_calls", "d", "envelope"), ("hubspot_deals", None, "envelope"),
        ("hubspot_deals", "d", "envelope"), ("gong_calls", None, "wrapped"), ("gong_calls", "d", "envelope")]


def test_an_unknown_type_refuses_the_whole_batch() -> None:
    err = error_of(dumps([envelope(), envelope(), {"type": "meeting.created", "data": {}}]))
    assert err.message == "unknown type"
    assert err.detail.startswith("item 2: no route for type 'meeting.created'; known types: call_completed")


def test_array_errors_name_the_item_index() -> None:
    items = [envelope(), envelope(), envelope(), envelope("x")]
    err = error_of(dumps(items))
    assert err.detail == "item 3: data must be a JSON object, got string"
    err = error_of(dumps([envelope(), "x"]))
    assert err.detail == "item 1: must be a JSON object, got string"
    err = error_of(dumps([envelope(), [envelope()]]))
    assert err.detail == "item 1: must be a JSON object, got array"


def test_parse_json_bytes() -> None:
    assert parse_json_bytes(b'{"a": [1, "\\u00e9"]}') == {"a": [1, "é"]}
    with pytest.raises(EnvelopeError, match="body is not valid JSON"):
        parse_json_bytes(b"{")


def test_bytes_like_bodies_are_accepted() -> None:
    assert parse_body(bytearray(dumps(envelope())), None)[0].document == CALL
    assert parse_body(memoryview(dumps(envelope())), None)[0].document == CALL


# ----------------------------------------------------------------- never anything else

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)
id_values = st.one_of(st.from_regex(r"\A[0-9]{1,5}\Z"), st.text(max_size=5), st.integers(), st.none())
calls = st.one_of(
    json_values,
    st.fixed_dictionaries({"metaData": st.one_of(json_values, st.fixed_dictionaries({"id": id_values}))}),
)
envelopes = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["call_completed", "call_updated", "call_deleted", "deal.x", "other"]),
         "data": calls},
        optional={"id": st.one_of(st.text(max_size=210), json_values),
                  "occurred_at": st.one_of(st.text(max_size=30), json_values, st.floats()),
                  "timestamp": json_values},
    ),
    st.fixed_dictionaries({"callData": calls}, optional={"isTest": json_values, "published_at": json_values}),
    json_values,
)
bodies = st.one_of(envelopes, st.lists(envelopes, max_size=5))
content_types = st.one_of(
    st.none(),
    st.sampled_from(["application/json", "application/x-ndjson", "text/plain", FORM_URLENCODED, "text/html",
                     "application/json; charset=utf-16", "application/problem+json"]),
    st.text(max_size=40),
)
webhook_ids = st.one_of(st.none(), st.text(max_size=210))


def _check(raw: bytes, content_type: str | None, webhook_id: str | None) -> None:
    try:
        events = parse_body(raw, content_type, webhook_id)
    except EnvelopeError as exc:  # includes UnsupportedMediaType
        assert exc.message
        return
    assert events
    for event in events:
        assert isinstance(event.event_id, str) and event.event_id
        assert isinstance(event.document, dict)
        assert event.collection in {"gong_calls", "hubspot_deals"}
        assert event.kind in {"envelope", "wrapped"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), content_types, webhook_ids)
def test_arbitrary_bytes_never_raise_anything_else(
    raw: bytes, content_type: str | None, webhook_id: str | None
) -> None:
    _check(raw, content_type, webhook_id)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, content_types, webhook_ids, st.booleans())
def test_arbitrary_json_never_raises_anything_else(
    body: Any, content_type: str | None, webhook_id: str | None, as_ndjson: bool
) -> None:
    # stdlib json: it also writes integers beyond 64 bits and lone surrogates, which orjson refuses.
    if as_ndjson and isinstance(body, list):
        raw = b"\n".join(json.dumps(item).encode() for item in body)
    else:
        raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _check(raw, content_type, webhook_id)


def _reference_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max([_reference_depth(v) for v in value.values()] or [0])
    if isinstance(value, list):
        return 1 + max([_reference_depth(v) for v in value] or [0])
    return 0


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**60, 2**60),
                  st.text(alphabet=st.sampled_from('ab"\\[]{}\n\u2028é'), max_size=6))
_tree = st.recursive(_leaf, lambda ch: st.one_of(
    st.lists(ch, max_size=3), st.dictionaries(st.text(alphabet='"\\[]{}ab', max_size=4), ch, max_size=3)),
    max_leaves=200)


@settings(max_examples=500, deadline=None)
@given(_tree, st.integers(0, 70))
def test_depth_check_agrees_with_the_nesting_of_any_document(value: object, wrap: int) -> None:
    from sophia_tasks.ingest.envelope import MAX_DEPTH, _check_depth

    for _ in range(wrap):
        value = [value] if wrap % 2 else {'k"[': value}
    raw = orjson.dumps(value)
    try:
        _check_depth(orjson.loads(raw), raw, None)
        refused = False
    except EnvelopeError:
        refused = True
    assert refused == (_reference_depth(value) > MAX_DEPTH)
