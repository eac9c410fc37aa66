"""Erasure: which keys a found document gives in each collection, and the errors it reports."""
from __future__ import annotations

from typing import Any

from sophia_tasks.flows import parse_spec
from sophia_tasks.ops.erase import Found, _reason, target_keys

RECEIVED = "2026-11-25T12:00:00.000000Z"


def spec(derived_key: str | None = None) -> Any:
    """gong_calls -> copy (same key, or its own pointer), both materialized to Redis."""
    derivation: dict[str, Any] = {"source": "gong_calls", "transform": "sophia_tasks.derivations.passthrough:derive"}
    if derived_key:
        derivation["key"] = derived_key
    return parse_spec({
        "collections": {"gong_calls": {"schema": "gong_call", "key": "/metaData/id"}},
        "derivations": {"calls_copy": derivation},
        "materializations": {"redis": {"endpoint": "redis", "bindings": [
            {"source": "gong_calls", "resource": {"key_prefix": "raw:"}},
            {"source": "calls_copy", "resource": {"key_prefix": "copy:"}}]}},
    })


def event(call_id: str, title: str) -> dict[str, Any]:
    return {"event_id": f"evt-{call_id}", "collection": "gong_calls", "received_at": RECEIVED,
            "published_at": RECEIVED, "source": "webhook", "is_test": False,
            "document": {"metaData": {"id": call_id, "title": title, "started": "2026-11-20T15:00:00Z"},
                         "parties": [{"emailAddress": "carl@acme.com"}]}}


def test_a_derivation_without_its_own_key_pointer_keeps_the_source_key() -> None:
    s = spec()
    found = Found()
    for e in (event("11", "a"), event("12", "b")):
        found.add(s, e["collection"], e["document"], event=e)
    assert found.events == {}  # nothing to run: the key is the source's
    assert target_keys(s, found) == {"gong_calls": {"11", "12"}, "calls_copy": {"11", "12"}}


def test_a_derivation_with_its_own_key_pointer_is_run_to_learn_the_keys() -> None:
    s = spec(derived_key="/metaData/title")
    found = Found()
    for e in (event("11", "title-a"), event("12", "title-b")):
        found.add(s, e["collection"], e["document"], event=e)
    assert target_keys(s, found) == {"gong_calls": {"11", "12"}, "calls_copy": {"title-a", "title-b"}}


def test_an_event_the_schema_refuses_still_gives_the_pointer_value_of_its_document() -> None:
    s = spec(derived_key="/metaData/title")
    bad = event("not-digits", "title-c")  # metaData.id must be digits: validate refuses it
    found = Found()
    found.add(s, "gong_calls", bad["document"], event=bad)
    assert target_keys(s, found)["calls_copy"] == {"title-c"}


def test_keys_of_a_derived_collection_stay_in_it_and_unknown_collections_are_ignored() -> None:
    s = spec()
    found = Found()
    found.add(s, "calls_copy", {"metaData": {"id": "77"}})
    found.add(s, "calls_copy", {"no": "key"}, key="78")  # a letter's document_key when the pointer finds none
    found.add(s, "gone_collection", {"metaData": {"id": "79"}})
    assert target_keys(s, found) == {"calls_copy": {"77", "78"}}


def test_an_error_never_carries_the_address() -> None:
    reason = _reason(RuntimeError("bad value Carl@ACME.com in\nrow 3"), "carl@acme.com")
    assert reason == "RuntimeError: bad value <address> in row 3"


def test_the_audit_keeps_no_key_that_holds_the_address() -> None:
    from sophia_tasks.core.addresses import AddressMatcher
    from sophia_tasks.ops.erase import _erased

    s = parse_spec({
        "collections": {"contacts": {"schema": "gong_call", "key": "/email"}},
        "materializations": {"redis": {"endpoint": "redis", "bindings": [
            {"source": "contacts", "resource": {"key_prefix": "c:"}}]}},
    }, check_imports=False)
    found = Found()
    for doc in ({"email": "Carl@Acme.com"}, {"email": "x-17", "note": "carl@acme.com"}):
        found.add(s, "contacts", doc)
    matcher = AddressMatcher("carl@acme.com")
    assert target_keys(s, found) == {"contacts": {"Carl@Acme.com", "x-17"}}
    assert _erased(s, found, False, matcher) == {"contacts": ["x-17"]}
    assert _erased(s, found, True, matcher) is None
