"""Where is this event? `GET /v1/events/<id>/trace` and `sophia-tasks trace` on the real stack: receipt,
credential name, dedupe, batch, validate, derive and each target's version, time and attempts; a key's
events with each target's current version; dead letters joined; unknown ids say how far back traces go."""
from __future__ import annotations

import json
import uuid
from typing import Any

from tests.integration.conftest import TOKEN, Harness, gong_call

TARGETS = ("redis", "postgres", "snowflake")


def trace_of(h: Harness, event_id: str) -> dict[str, Any] | None:
    r = h.read(f"/v1/events/{event_id}/trace")
    assert r.status_code in (200, 404), r.text
    return r.json() if r.status_code == 200 else None


def test_an_event_is_traced_from_receipt_to_every_target(harness: Harness) -> None:
    call = gong_call()
    call_id = call["metaData"]["id"]
    event_id = f"trace-{uuid.uuid4().hex}"
    body = {"type": "call_completed", "id": event_id, "data": call}
    assert harness.post(body).status_code == 202
    assert harness.post(body).status_code == 200  # a duplicate delivery

    def written_everywhere() -> dict[str, Any] | None:
        t = trace_of(harness, event_id)
        return t if t and all(t["targets"].get(x, {}).get("status") == "written" for x in TARGETS) else None

    t = harness.wait(written_everywhere, 60, "the trace to show every target written")
    assert t["event_id"] == event_id and t["collection"] == "gong_calls" and t["key"] == call_id
    assert t["received"]["source"] == "webhook" and t["received"]["lane"] == "live"
    assert t["received"]["credential"].startswith("bearer:") and TOKEN not in json.dumps(t)
    assert t["dedupe"]["result"] == "accepted" and t["dedupe"]["duplicates"] == 1
    assert t["dedupe"]["last_duplicate_at"] is not None
    assert t["batch"]["validate_task"] and t["batch"]["cut"]
    assert t["validate"]["result"] == "ok" and t["validate"]["took_s"] >= 0
    assert t["derive"]["result"] == "ok" and t["derive"]["took_s"] >= 0
    version = harness.redis_doc(call_id)["_meta"]["published_at"]
    for target in TARGETS:
        info = t["targets"][target]
        assert info["version"] == version and info["attempts"] == 1 and info["written_at"], (target, info)
        assert info["took_s"] >= 0 and "dead_letter" not in info
    assert t["journal"] and t["journal"][0]["lane"] == "live"

    cli = harness.cli("trace", event_id, "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["targets"]["postgres"]["version"] == version
    text = harness.cli("trace", event_id)
    assert text.returncode == 0 and "written" in text.stdout and "duplicate" in text.stdout

    # The call's key: its events newest first, and each target's current version.
    newer = gong_call(call_id, title="Acme - follow-up")
    second = f"trace-{uuid.uuid4().hex}"
    assert harness.post({"type": "call_completed", "id": second, "data": newer}).status_code == 202
    harness.wait(lambda: (harness.redis_doc(call_id) or {}).get("_meta", {}).get("event_id") == second
                 and len(harness.pg_rows(call_id)) == 1 and harness.pg_rows(call_id)[0][1]["_meta"]["event_id"]
                 == second and (trace_of(harness, second) or {}).get("targets", {}).get("snowflake", {})
                 .get("status") == "written", 60, "the second event everywhere")
    by_key = harness.cli("trace", call_id, "--json")
    assert by_key.returncode == 0, by_key.stderr
    k = json.loads(by_key.stdout)
    assert [e["event_id"] for e in k["events"]] == [second, event_id]
    newest = k["events"][0]["targets"]["redis"]["version"]
    for target in TARGETS:
        assert k["current"][target]["version"] == newest and k["current"][target]["event_id"] == second


def test_an_invalid_event_shows_its_dead_letter_and_errors(harness: Harness) -> None:
    call = gong_call()
    call["metaData"]["duration"] = "an hour"
    event_id = f"trace-bad-{uuid.uuid4().hex}"
    assert harness.post({"type": "call_completed", "id": event_id, "data": call}).status_code == 202
    t = harness.wait(lambda: (lambda t: t if t and t["validate"].get("dead_letter") else None)(
        trace_of(harness, event_id)), 60, "the dead letter in the trace")
    assert t["validate"]["result"] == "invalid"
    letter = t["validate"]["dead_letter"]
    assert letter["id"] > 0 and "duration" in json.dumps(letter["details"])
    assert t["derive"]["result"] == "skipped"
    assert all(info["status"] == "not sent" for info in t["targets"].values())


def test_an_unknown_event_is_a_404_that_says_how_far_back_traces_go(harness: Harness) -> None:
    r = harness.read("/v1/events/never-seen/trace")
    assert r.status_code == 404
    assert "traces go back 24 h" in r.json()["detail"]
    assert harness.read("/v1/events/never-seen/trace", token=TOKEN).status_code == 403  # a webhook token cannot read
    assert harness.read("/v1/events/never-seen/trace", token=None).status_code == 401
    cli = harness.cli("trace", "never-seen")
    assert cli.returncode == 1 and "traces go back 24 h" in cli.stderr
