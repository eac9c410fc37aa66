"""``sophia-tasks dlq``: the stage, target and age filters and ``--json`` of list, replay and purge."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from sophia_tasks.core.documents import format_version, utcnow
from sophia_tasks.store.db import connections
from sophia_tasks.store.deadletter import DeadLetterStore, Letter
from tests.integration.conftest import SEALER, Harness, gong_call


def document(call_id: str, title: str) -> dict[str, Any]:
    now = format_version(utcnow())
    return {"_meta": {"published_at": now, "event_id": f"evt-dlq-{call_id}", "collection": "gong_calls_enriched",
                      "received_at": now, "source": "webhook"},
            "metaData": {"id": call_id, "title": title}}


@pytest.fixture()
def letters(harness: Harness) -> Iterator[dict[str, Any]]:
    """Three letters of our own: an old validate one, a redis and a postgres materialize one."""
    connections.discard(harness.env["SOPHIA_POSTGRES_DSN"])  # an earlier test may have killed it
    store = DeadLetterStore(harness.env["SOPHIA_POSTGRES_DSN"], sealer=SEALER)
    store.count()  # creates the service tables in a fresh database
    old_call, redis_call, pg_call = gong_call(), gong_call(), gong_call()
    ids = {}
    for name, letter in {
        "old": Letter(stage="validate", collection="gong_calls", error="schema gong_call: 1 field error(s)",
                      payload={"event_id": f"evt-dlq-old-{old_call['metaData']['id']}", "collection": "gong_calls",
                               "received_at": format_version(utcnow()), "published_at": format_version(utcnow()),
                               "source": "webhook", "is_test": False, "document": old_call},
                      document_key=old_call["metaData"]["id"]),
        "redis": Letter(stage="materialize", target="redis", collection="gong_calls_enriched", error="boom",
                        payload=document(redis_call["metaData"]["id"], "replayed to redis"),
                        document_key=redis_call["metaData"]["id"], attempts=5),
        "postgres": Letter(stage="materialize", target="postgres", collection="gong_calls_enriched", error="boom",
                           payload=document(pg_call["metaData"]["id"], "stays"), document_key=pg_call["metaData"]["id"],
                           attempts=5),
    }.items():
        store.record([letter])
        (stored,) = [s for s in store.list(status="all", limit=None) if s.document_key == letter.document_key]
        ids[name] = stored.id
    conn = harness.pg()
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE sophia_dead_letters SET created_at = now() - interval '3 hours' WHERE id = %s",
                    (ids["old"],))
    conn.close()
    yield {"ids": ids, "redis_call": redis_call["metaData"]["id"]}
    store.purge(ids=list(ids.values()))


def listed(harness: Harness, *args: str) -> set[int]:
    # Every letter, not the oldest 100 (the default): other tests of the session leave letters too.
    out = harness.cli("dlq", "list", "--json", "--limit", "100000", *args)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert all({"id", "stage", "target", "collection", "error", "status", "created_at"} <= set(r) for r in rows)
    return {r["id"] for r in rows}


def test_list_filters_by_stage_target_and_age(harness: Harness, letters: dict[str, Any]) -> None:
    ids = letters["ids"]
    mine = set(ids.values())
    assert listed(harness) & mine == mine
    assert listed(harness, "--stage", "materialize") & mine == {ids["redis"], ids["postgres"]}
    assert listed(harness, "--stage", "validate") & mine == {ids["old"]}
    assert listed(harness, "--target", "redis") & mine == {ids["redis"]}
    assert listed(harness, "--older-than", "2h") & mine == {ids["old"]}
    assert listed(harness, "--older-than", "4h") & mine == set()
    assert listed(harness, "--stage", "materialize", "--target", "postgres", "--older-than", "1s") & mine == {
        ids["postgres"]}
    table = harness.cli("dlq", "list", "--target", "postgres", "--limit", "100000")
    assert table.returncode == 0 and "dead letter(s)" in table.stdout and "boom" in table.stdout
    one = harness.cli("dlq", "list", "--limit", "1")  # a cut list says so
    assert one.returncode == 0 and "the oldest 1 shown; --limit for more" in one.stdout
    bad_age = harness.cli("dlq", "list", "--older-than", "soon")
    assert bad_age.returncode != 0 and "30s, 15m, 2h or 7d" in bad_age.stderr


def test_show_replay_and_purge_with_filters(harness: Harness, letters: dict[str, Any]) -> None:
    ids = letters["ids"]
    shown = harness.cli("dlq", "show", str(ids["redis"]))
    assert shown.returncode == 0, shown.stderr
    full = json.loads(shown.stdout)
    assert full["target"] == "redis" and full["payload"]["metaData"]["title"] == "replayed to redis"
    missing = harness.cli("dlq", "show", "987654321")
    assert missing.returncode == 1 and missing.stderr.strip() == "error: no dead letter with id 987654321"

    replayed = harness.cli("dlq", "replay", "--all", "--stage", "materialize", "--target", "redis", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["replayed"] >= 1
    doc = harness.wait(lambda: harness.redis_doc(letters["redis_call"]), 30, "the replayed document in Redis")
    assert doc["metaData"]["title"] == "replayed to redis"
    assert listed(harness, "--status", "replayed") & set(ids.values()) == {ids["redis"]}
    assert ids["postgres"] in listed(harness, "--status", "pending")
    nothing = harness.cli("dlq", "replay")
    assert nothing.returncode == 1 and "letter ids or pass --all" in nothing.stderr

    none = harness.cli("dlq", "purge", "--target", "no-such-target", "--status", "all", "--yes")
    assert none.returncode == 0 and "nothing to purge" in none.stdout
    old = harness.cli("dlq", "purge", "--stage", "validate", "--older-than", "2h", "--status", "pending", "--yes")
    assert old.returncode == 0 and "purged" in old.stdout, old.stderr
    remaining = listed(harness, "--status", "all")
    assert ids["old"] not in remaining and ids["postgres"] in remaining and ids["redis"] in remaining
    replayed_only = harness.cli("dlq", "purge", "--target", "redis", "--yes")  # default: replayed letters only
    assert replayed_only.returncode == 0
    remaining = listed(harness, "--status", "all")
    assert ids["redis"] not in remaining and ids["postgres"] in remaining
