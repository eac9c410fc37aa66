"""Deletes (Estuary's ``_meta.op = "d"``) in every target, in every order against upserts.

The first tests drive the three materializers directly against the real Redis, PostgreSQL and
Snowflake emulator of the test stack, with a spec of their own (hard and soft deletes); the
last ones send deletes through the webhook and rebuild a target from the journal.
"""
from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any, Iterator

import pytest

from sophia_tasks.core.documents import format_version, make_document, utcnow
from sophia_tasks.flows import parse_spec
from sophia_tasks.materializers import get_materializer
from sophia_tasks.settings import load_settings
from tests.integration.conftest import Harness, gong_call
from tests.integration.test_journal_rebuild import broker_idle, envelope

V1, V2, V3 = "2026-11-01T00:00:01.000000Z", "2026-11-01T00:00:02.000000Z", "2026-11-01T00:00:03.000000Z"

SPEC = {
    "collections": {"notes": {"schema": "gong_call", "key": "/id"}},
    "materializations": {
        "redis": {"endpoint": "redis", "bindings": [
            {"source": "notes", "resource": {"key_prefix": "sophia:test_notes:", "ttl_seconds": 600}}]},
        "pg_hard": {"endpoint": "postgres", "bindings": [
            {"source": "notes", "resource": {"table": "test_notes_hard", "key_column": "id",
                                             "projections": {"body": {"from": "/body", "type": "string"}}}}]},
        "pg_soft": {"endpoint": "postgres", "bindings": [
            {"source": "notes", "resource": {"table": "test_notes_soft", "key_column": "id", "soft_delete": True,
                                             "projections": {"body": {"from": "/body", "type": "string"},
                                                             "op": {"from": "/_meta/op", "type": "string"}}}}]},
        "sf_hard": {"endpoint": "snowflake", "bindings": [
            {"source": "notes", "resource": {"table": "TEST_NOTES_HARD", "key_column": "ID",
                                             "projections": {"BODY": {"from": "/body", "type": "string"}}}}]},
        "sf_soft": {"endpoint": "snowflake", "bindings": [
            {"source": "notes", "resource": {"table": "TEST_NOTES_SOFT", "key_column": "ID", "soft_delete": True,
                                             "projections": {"BODY": {"from": "/body", "type": "string"}}}}]},
    },
}
HARD = ("redis", "pg_hard", "sf_hard")
SOFT = ("pg_soft", "sf_soft")


def upsert(key: str, version: str, body: str = "hello") -> dict[str, Any]:
    return make_document({"id": key, "body": body}, {"published_at": version, "event_id": f"{key}@{version}"})


def delete(key: str, version: str) -> dict[str, Any]:
    return make_document({"id": key}, {"published_at": version, "event_id": f"{key}-d@{version}", "op": "d"})


class Targets:
    """Write and read one materialization of the test spec."""

    def __init__(self, harness: Harness) -> None:
        self.settings = load_settings(harness.env)
        self.spec = parse_spec(SPEC, "tests/deletes.yaml", check_imports=False)

    def write(self, name: str, documents: list[dict[str, Any]]) -> int:
        mat = self.spec.materializations[name]
        writer = get_materializer(mat.endpoint, self.settings, self.spec)
        result = writer.write_batch(mat.bindings[0], documents)
        assert not result.rejected, result.rejected
        return result.written

    def read(self, name: str, key: str) -> dict[str, Any] | None:
        mat = self.spec.materializations[name]
        return get_materializer(mat.endpoint, self.settings, self.spec).fetch(mat.bindings[0], key)


@pytest.fixture(scope="module")
def targets(harness: Harness) -> Iterator[Targets]:
    yield Targets(harness)


def fresh() -> str:
    return uuid.uuid4().hex[:12]


@pytest.mark.parametrize("name", HARD)
def test_hard_delete_in_each_order(targets: Targets, name: str) -> None:
    # An upsert, then a newer delete: gone.
    a = fresh()
    targets.write(name, [upsert(a, V1)])
    assert targets.read(name, a)["body"] == "hello"
    assert targets.write(name, [delete(a, V2)]) == 1
    assert targets.read(name, a) is None
    # ...and an older upsert arriving late stays deleted (the tombstone remembers V2).
    assert targets.write(name, [upsert(a, V1, "late")]) == 0
    assert targets.read(name, a) is None
    # A newer upsert after the delete brings it back.
    assert targets.write(name, [upsert(a, V3, "back")]) == 1
    assert targets.read(name, a)["body"] == "back"

    # A delete older than the stored version changes nothing.
    b = fresh()
    targets.write(name, [upsert(b, V2)])
    assert targets.write(name, [delete(b, V1)]) == 0
    assert targets.read(name, b)["body"] == "hello"

    # A delete first (nothing stored), then an older upsert: nothing appears; then a newer one: it does.
    c = fresh()
    targets.write(name, [delete(c, V2)])
    assert targets.write(name, [upsert(c, V1)]) == 0
    assert targets.read(name, c) is None
    targets.write(name, [upsert(c, V3, "new")])
    assert targets.read(name, c)["body"] == "new"

    # A delete and an upsert of one version: the delete wins, in either order.
    d = fresh()
    targets.write(name, [upsert(d, V2)])
    targets.write(name, [delete(d, V2)])
    assert targets.read(name, d) is None
    targets.write(name, [upsert(d, V2, "again")])
    assert targets.read(name, d) is None

    # In one batch: the newest of each key wins, whatever the order in the batch.
    e, f = fresh(), fresh()
    targets.write(name, [upsert(e, V1), delete(e, V2), delete(f, V1), upsert(f, V2, "kept")])
    assert targets.read(name, e) is None
    assert targets.read(name, f)["body"] == "kept"

    # A redelivered delete is idempotent.
    targets.write(name, [delete(e, V2)])
    assert targets.read(name, e) is None


@pytest.mark.parametrize("name", SOFT)
def test_soft_delete_keeps_the_row_marked(targets: Targets, name: str) -> None:
    a = fresh()
    targets.write(name, [upsert(a, V1)])
    assert targets.write(name, [delete(a, V2)]) == 1
    row = targets.read(name, a)
    assert row is not None and row["_meta"]["op"] == "d" and row["_meta"]["published_at"] == V2
    assert "body" not in row  # the row is the delete document: the key and _meta
    # Last write wins as for any version: older upserts stay refused, a newer one replaces the marker.
    targets.write(name, [upsert(a, V1, "late")])
    assert targets.read(name, a)["_meta"]["op"] == "d"
    targets.write(name, [upsert(a, V3, "back")])
    back = targets.read(name, a)
    assert back["body"] == "back" and "op" not in back["_meta"]
    # An older delete changes nothing.
    targets.write(name, [delete(a, V2)])
    assert targets.read(name, a)["body"] == "back"


def test_a_soft_deleted_row_can_be_filtered_by_a_projection(harness: Harness, targets: Targets) -> None:
    a, b = fresh(), fresh()
    targets.write("pg_soft", [upsert(a, V1), upsert(b, V1)])
    targets.write("pg_soft", [delete(a, V2)])
    conn = harness.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, op, body FROM test_notes_soft WHERE id IN (%s, %s) ORDER BY id", (a, b))
            rows = dict((r[0], r[1:]) for r in cur.fetchall())
    finally:
        conn.close()
    assert rows[a] == ("d", None) and rows[b] == (None, "hello")


def test_the_flow_spec_checks_soft_delete(harness: Harness) -> None:
    from sophia_tasks.core.flowspec import FlowSpecError

    bad = json.loads(json.dumps(SPEC))
    bad["materializations"]["pg_soft"]["bindings"][0]["resource"]["soft_delete"] = "yes"
    bad["materializations"]["redis"]["bindings"][0]["resource"]["soft_delete"] = True
    with pytest.raises(FlowSpecError) as info:
        parse_spec(bad, "tests/deletes.yaml", check_imports=False)
    text = str(info.value)
    assert "soft_delete: must be true or false" in text and "a cache drops deleted keys" in text


# -- through the webhook ----------------------------------------------------------------------------
def delete_envelope(call_id: str, at: str) -> dict[str, Any]:
    """A delete as a sender marks it in the document (``_meta.op``)."""
    return {"type": "call_updated", "occurred_at": at, "data": {"metaData": {"id": call_id}, "_meta": {"op": "d"}}}


def everywhere(h: Harness, call_id: str) -> tuple[bool, bool, bool]:
    return h.redis_doc(call_id) is not None, bool(h.pg_rows(call_id)), bool(h.sf_rows(call_id))


def test_a_delete_through_the_webhook_deletes_the_call_everywhere_and_a_newer_call_returns(
        harness: Harness) -> None:
    call = gong_call(title="to be deleted")
    cid = call["metaData"]["id"]
    t1, t2, t3 = (format_version(utcnow() + timedelta(minutes=m)) for m in (1, 2, 3))
    assert harness.post(envelope(call, occurred_at=t1)).status_code == 202
    harness.wait(lambda: all(everywhere(harness, cid)), 30, "the call in every target")

    r = harness.post(delete_envelope(cid, t2))
    assert r.status_code == 202, r.text
    harness.wait(lambda: not any(everywhere(harness, cid)), 30, "the call gone from every target")
    assert harness.read(f"/v1/collections/gong_calls_enriched/documents/{cid}").status_code == 404
    # No dead letter: a delete carries only the key and needs no schema.
    assert harness.dead_letters(document_key=cid) == []

    # A newer version after the delete brings the call back everywhere.
    assert harness.post(envelope(gong_call(cid, title="back again"), occurred_at=t3)).status_code == 202
    harness.wait(lambda: all(everywhere(harness, cid)), 30, "the call back in every target")
    assert harness.pg_rows(cid)[0][3] == "back again"


def test_a_rebuild_from_the_journal_reproduces_a_delete(harness: Harness) -> None:
    since = format_version(utcnow() - timedelta(seconds=1))
    kept, gone = gong_call(title="rebuild keeps me"), gong_call(title="rebuild deletes me")
    gid = gone["metaData"]["id"]
    t1, t2 = (format_version(utcnow() + timedelta(minutes=m)) for m in (1, 2))
    assert harness.post([envelope(kept, occurred_at=t1), envelope(gone, occurred_at=t1)]).status_code == 202
    harness.wait(lambda: harness.pg_rows(gid) and harness.pg_rows(kept["metaData"]["id"]), 30, "both calls")
    assert harness.post(delete_envelope(gid, t2)).status_code == 202
    harness.wait(lambda: not harness.pg_rows(gid), 30, "the deleted call gone from PostgreSQL")
    harness.wait(lambda: broker_idle(harness), 60, "an idle broker before the rebuild")

    # A new, empty staging table, and no tombstones: only the journal's delete can keep the call out.
    conn = harness.pg()
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE gong_calls_enriched")
        cur.execute("DELETE FROM sophia_tombstones WHERE target = 'gong_calls_enriched'")
    conn.close()
    out = harness.cli("rebuild", "--target", "postgres", "--since", since, "--json")
    assert out.returncode == 0, out.stderr
    harness.wait(lambda: harness.pg_rows(kept["metaData"]["id"]), 60, "the kept call rebuilt")
    harness.wait(lambda: broker_idle(harness), 60, "the rebuild to finish")
    assert harness.pg_rows(gid) == []


@pytest.mark.parametrize("name", ("pg_hard", "sf_hard"))
def test_old_tombstones_are_purged(harness: Harness, targets: Targets, name: str) -> None:
    a, b = fresh(), fresh()
    targets.write(name, [delete(a, V2), delete(b, V2)])
    mat = targets.spec.materializations[name]
    writer = get_materializer(mat.endpoint, targets.settings, targets.spec)
    table = str(mat.bindings[0].table)
    if name == "pg_hard":
        conn = harness.pg()
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE sophia_tombstones SET deleted_at = now() - interval '40 days' "
                        "WHERE target = %s AND key = %s", (table, a))
        conn.close()
    else:
        conn = harness.sf_connect()
        conn.cursor().execute('UPDATE "SOPHIA_TOMBSTONES" SET "DELETED_AT" = DATEADD(day, -40, CURRENT_TIMESTAMP()) '
                              'WHERE "TARGET" = ? AND "KEY" = ?', [table, a])
        conn.close()
    assert writer.purge_tombstones(mat.bindings[0], 30) == 1  # type: ignore[attr-defined]
    # The purged key takes an old upsert again; the kept tombstone still refuses one.
    assert targets.write(name, [upsert(a, V1)]) == 1
    assert targets.write(name, [upsert(b, V1)]) == 0


# -- a collection only the tests' spec declares (test_events): routed deletes, soft in PostgreSQL ----------
def _test_event(t: str, i: int, at: str, name: str = "n") -> dict[str, Any]:
    return {"type": "test.created", "occurred_at": at, "data": {"tenant": t, "id": i, "name": name}}


def _test_removed(t: str, i: int, at: str) -> dict[str, Any]:
    return {"type": "test.removed", "occurred_at": at, "data": {"tenant": t, "id": i}}


def _state(h: Harness, key: str) -> tuple[Any, Any, Any]:
    """(Redis document, PostgreSQL row document, Snowflake document) of a test_events key."""
    return (h.redis_document(f"sophia:test_events:{key}"), h.pg_document("test_events", "event_key", key),
            h.sf_document("TEST_EVENTS", "EVENT_KEY", key))


def _settled(h: Harness, t: str, at: str) -> None:
    """A sentinel posted after (and in the same batches as) what came before, waited for everywhere."""
    i = int(uuid.uuid4().int % 10**6) + 1000
    assert h.post(_test_event(t, i, at, "sentinel")).status_code == 202
    h.wait(lambda: all(x is not None for x in _state(h, f"{t}:{i}")), 30, "the sentinel in every target")


def test_routed_deletes_of_a_test_collection_in_each_order_hard_and_soft(harness: Harness) -> None:
    t = "del" + "".join(chr(97 + int(c, 16) % 26) for c in uuid.uuid4().hex[:8])
    t1, t2 = (format_version(utcnow() + timedelta(minutes=m)) for m in (1, 2))
    # 1: upsert then a newer delete. 2: a delete, then an older upsert (late). 3: upsert then an older delete.
    # 4: a delete, then a newer upsert.
    assert harness.post([_test_event(t, 1, t1), _test_event(t, 3, t2), _test_removed(t, 2, t2),
                         _test_removed(t, 4, t1)]).status_code == 202
    harness.wait(lambda: _state(harness, f"{t}:1")[0] and _state(harness, f"{t}:3")[0], 30, "the first upserts")
    harness.wait(lambda: _state(harness, f"{t}:2")[1] and _state(harness, f"{t}:4")[1], 30, "the first deletes")
    assert harness.post([_test_removed(t, 1, t2), _test_event(t, 2, t1, "late"), _test_removed(t, 3, t1),
                         _test_event(t, 4, t2, "back")]).status_code == 202
    _settled(harness, t, t2)
    harness.wait(lambda: _state(harness, f"{t}:1")[0] is None, 30, "key 1 deleted")

    for key, alive in ((1, False), (2, False), (3, True), (4, True)):
        cached, row, warehouse = _state(harness, f"{t}:{key}")
        if alive:
            assert cached and row and warehouse, key
            assert row["_meta"].get("op") is None and cached["name"] == row["name"] == warehouse["name"], key
        else:
            # Redis dropped it, Snowflake deleted the row, PostgreSQL (soft_delete) keeps the delete marked.
            assert cached is None and warehouse is None, key
            assert row["_meta"]["op"] == "d" and row["_meta"]["published_at"] == t2 and "name" not in row, key
    assert harness.read(f"/v1/collections/test_events/documents/{t}:2").status_code == 404
    assert harness.dead_letters(collection="test_events", document_key=f"{t}:1") == []
