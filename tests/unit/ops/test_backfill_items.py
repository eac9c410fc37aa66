"""Backfill items -> events: the accepted shapes, deterministic ids, and the version rule."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from sophia_tasks.flows import load_spec, parse_spec
from sophia_tasks.ops import backfill
from sophia_tasks.ops.backfill import BackfillError, BadItem, canonical_id, item_version, parse_date, target_for
from sophia_tasks.settings import DEFAULT_FLOW

RECEIVED = "2026-11-25T12:00:00.000000Z"
SPEC = load_spec(DEFAULT_FLOW)
TARGET = target_for(SPEC)


def item_to_event(item: Any, received_at: str) -> dict[str, Any]:
    """The backfill's item -> event with the shipped spec's routes."""
    return backfill.item_to_event(item, received_at, TARGET)


def call(call_id: str = "1234567890", **meta: object) -> dict:
    md = {"id": call_id, "title": "Acme", "started": "2026-11-20T15:00:00-05:00"}
    md.update(meta)
    return {"metaData": md, "parties": []}


def test_a_bare_call_the_envelope_and_the_automation_body_all_become_events() -> None:
    bare = item_to_event(call(), RECEIVED)
    env = item_to_event({"type": "call_completed", "data": call()}, RECEIVED)
    auto = item_to_event({"callData": call(), "isTest": True}, RECEIVED)
    for event in (bare, env, auto):
        assert event["collection"] == "gong_calls"
        assert event["document"] == call()
        assert event["source"] == "backfill"
        assert event["received_at"] == RECEIVED
    assert auto["is_test"] is True and bare["is_test"] is False


def test_event_ids_are_deterministic_and_follow_the_webhook_rule() -> None:
    item = {"callData": call(), "isTest": False}
    assert item_to_event(item, RECEIVED)["event_id"] == item_to_event(dict(item), "2027-01-01T00:00:00Z")["event_id"]
    assert item_to_event(item, RECEIVED)["event_id"] == canonical_id(item)
    # Key order does not matter (canonical JSON), content does.
    reordered = {"isTest": False, "callData": {"parties": [], "metaData": call()["metaData"]}}
    assert item_to_event(reordered, RECEIVED)["event_id"] == canonical_id(item)
    assert item_to_event(call(title="other"), RECEIVED)["event_id"] != item_to_event(call(), RECEIVED)["event_id"]
    # An envelope id is the event id, as on the webhook.
    assert item_to_event({"type": "call_completed", "id": "evt-1", "data": call()}, RECEIVED)["event_id"] == "evt-1"


def test_the_version_is_the_items_own_time_else_started() -> None:
    own = item_to_event({"type": "call_completed", "data": call(), "occurred_at": "2026-11-21T09:00:00+02:00"},
                        RECEIVED)
    assert own["published_at"] == "2026-11-21T07:00:00.000000Z"
    started = item_to_event(call(), RECEIVED)
    assert started["published_at"] == "2026-11-20T20:00:00.000000Z"
    exported = dict(call(), _meta={"published_at": "2026-11-22T00:00:00Z", "event_id": "x"})
    assert item_to_event(exported, RECEIVED)["published_at"] == "2026-11-22T00:00:00.000000Z"
    # Nothing at all: the time of the backfill.
    no_time = {"metaData": {"id": "42"}}
    assert item_to_event(no_time, RECEIVED)["published_at"] == RECEIVED
    assert item_version({}, {"metaData": {"started": "not a date"}}, None) is None


@pytest.mark.parametrize("item, reason", [
    ([1, 2], "must be a JSON object"),
    ("text", "must be a JSON object"),
    ({"type": "call_scheduled", "data": call()}, "unknown type"),
    ({"callData": call(), "isTest": "no"}, "isTest"),
    ({"type": "call_completed", "data": "x"}, "data must be a JSON object"),
    ({"type": "call_completed"}, "data is missing"),
    ({"hello": "world"}, "invalid envelope"),
])
def test_bad_items_say_why(item: object, reason: str) -> None:
    with pytest.raises(BadItem) as err:
        item_to_event(item, RECEIVED)
    assert reason in str(err.value)


def test_dates_for_since_and_until() -> None:
    assert parse_date("2026-01-05", "--since").isoformat() == "2026-01-05T00:00:00+00:00"
    assert parse_date("2026-01-05T10:00:00+02:00", "--since").isoformat() == "2026-01-05T10:00:00+02:00"
    assert parse_date(None, "--until") is None
    with pytest.raises(BackfillError, match="--since"):
        parse_date("yesterday", "--since")


# -- reconciliation (sophia_tasks.ops.reconcile) -------------------------------------------------------
def test_reconcile_compares_gongs_version_with_ours() -> None:
    from sophia_tasks.ops.reconcile import compare

    def call(cid: str) -> dict:
        return {"metaData": {"id": cid, "started": "2026-11-20T15:00:00-05:00"}}

    events = [item_to_event(call(c), "2026-12-01T00:00:00.000000Z") for c in ("1", "2", "3", "4")]
    assert events[0]["published_at"] == "2026-11-20T20:00:00.000000Z"  # Gong's version: the call's start
    held = {"2": "2026-11-20T20:00:00.000000Z",   # the same version: nothing to do
            "3": "2026-11-01T00:00:00.000000Z",   # older here: Gong's is newer
            "4": "2026-12-02T09:00:00.000000Z"}   # a live update, newer here
    found = [(f.key, f.outcome, f.our_version) for f, _e in compare(events, held)]
    assert found == [("1", "missing", None), ("3", "newer", "2026-11-01T00:00:00.000000Z")]


def test_the_beat_schedule_reconciles_only_with_gong_credentials() -> None:
    from celery import Celery

    from sophia_tasks.flows import load_spec
    from sophia_tasks.messaging.config import configure
    from sophia_tasks.settings import DEFAULT_FLOW, Settings

    spec = load_spec(DEFAULT_FLOW)
    without = Celery("t1")
    configure(without, Settings(), spec)
    assert "reconcile" not in without.conf.beat_schedule
    with_keys = Celery("t2")
    configure(with_keys, Settings(gong_access_key="k", gong_access_key_secret="s", reconcile_every_seconds=600), spec)
    entry = with_keys.conf.beat_schedule["reconcile"]
    assert entry["task"] == "sophia.reconcile" and entry["schedule"] == 600
    assert with_keys.conf.task_routes["sophia.reconcile"]["queue"] == "sophia.backfill"


def test_the_collection_comes_from_the_spec_routes_or_the_option() -> None:
    """Bare calls go to the route of call_completed, or to --collection; envelopes follow their routes."""
    assert TARGET.collection == "gong_calls"
    deleted = item_to_event({"type": "call_deleted", "data": {"metaData": {"id": "7"}}}, RECEIVED)
    assert deleted["collection"] == "gong_calls" and deleted["op"] == "d"
    assert "op" not in item_to_event(call(), RECEIVED)
    deal = backfill.item_to_event({"type": "deal.creation", "data": {"portalId": 1, "dealId": "2"}}, RECEIVED, TARGET)
    assert deal["collection"] == "hubspot_deals"
    data = yaml.safe_load(DEFAULT_FLOW.read_text())
    data["collections"]["calls_archive"] = {"schema": "gong_call", "key": "/metaData/id"}
    data["routes"] = {"deal.*": "hubspot_deals"}
    data["wrappers"] = {}
    spec = parse_spec(data, "t.yaml")
    other = target_for(spec, "calls_archive")
    assert backfill.item_to_event(call(), RECEIVED, other)["collection"] == "calls_archive"
    with pytest.raises(BackfillError, match="no route for 'call_completed': give --collection"):
        target_for(spec)
    with pytest.raises(BackfillError, match="known collections: gong_calls, hubspot_deals, calls_archive"):
        target_for(spec, "nope")
