"""The event journal and ``sophia-tasks rebuild``: a dropped table comes back from the journal."""
from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import redis

from sophia_tasks.core.documents import format_version, utcnow
from sophia_tasks.store import journal as journal_module
from sophia_tasks.store.db import connections
from sophia_tasks.store.journal import journal_rows, purge_expired, write_rows
from sophia_tasks.store.sealing import is_sealed
from tests.integration.conftest import SEALER, Harness, gong_call


def envelope(call: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "call_completed", "data": call, **extra}


def journal(h: Harness, event_id: str) -> list[dict[str, Any]]:
    conn = h.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('sophia_journal')")
            if cur.fetchone()[0] is None:
                return []
            cur.execute("SELECT event_id, received_at, lane, source, event, journaled_at FROM sophia_journal "
                        "WHERE event_id = %s", (event_id,))
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            for row in rows:
                assert is_sealed(row["event"]), row  # PII at rest: only the sealed form is stored
                row["event"] = SEALER.open(row["event"])
            return rows
    finally:
        conn.close()


def table_rows(h: Harness) -> dict[str, tuple[Any, ...]]:
    """Every row of the staging table, the derivation's own clock (enriched_at) left out."""
    conn = h.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('gong_calls_enriched')")
            if cur.fetchone()[0] is None:
                return {}
            cur.execute("SELECT call_id, flow_document, flow_published_at, title, started, duration_seconds, "
                        "risk_score FROM gong_calls_enriched")
            out = {}
            for call_id, doc, *rest in cur.fetchall():
                doc = copy.deepcopy(doc)
                (doc.get("enrichment") or {}).pop("enriched_at", None)
                out[call_id] = (doc, *rest)
            return out
    finally:
        conn.close()


def test_every_accepted_event_is_journaled(harness: Harness) -> None:
    calls = [gong_call(title=f"journaled {i}") for i in range(5)]
    r = harness.post([envelope(c, id=f"evt-journal-{c['metaData']['id']}") for c in calls])
    assert r.status_code == 202, r.text
    for c in calls:
        rows = harness.wait(lambda c=c: journal(harness, f"evt-journal-{c['metaData']['id']}"), 30, "a journal row")
        assert len(rows) == 1
        (row,) = rows
        assert row["lane"] == "live" and row["source"] == "webhook"
        assert row["event"]["document"]["metaData"]["id"] == c["metaData"]["id"]


def event_column_type(h: Harness) -> str | None:
    conn = h.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'sophia_journal' "
                        "AND column_name = 'event'")
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def recreate_journal(h: Harness, schema: str | None) -> None:
    """Drop the journal (and its partitions); create it with ``schema`` when given. Every process
    heals its own caches: an insert into a partition that is gone is retried once after a forget."""
    dsn = h.env["SOPHIA_POSTGRES_DSN"]
    conn = h.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS sophia_journal CASCADE")
            if schema:
                cur.execute(schema)
        conn.commit()
    finally:
        conn.close()
    journal_module._forget(dsn)


def test_journal_keeps_one_row_per_event_takes_a_fix_and_purges_old_days(harness: Harness) -> None:
    check_journal_rules(harness)
    assert event_column_type(harness) == "json"


def test_a_journal_created_as_jsonb_by_an_earlier_version_keeps_working(harness: Harness) -> None:
    """Earlier versions created ``event jsonb``; the insert leaves its value untyped and the conflict
    rule compares text, so the same rules hold on such a journal without converting it."""
    recreate_journal(harness, journal_module._SCHEMA.replace("event        json NOT NULL",
                                                             "event        jsonb NOT NULL"))
    try:
        assert event_column_type(harness) == "jsonb"
        check_journal_rules(harness)
        assert event_column_type(harness) == "jsonb"
        dsn = harness.env["SOPHIA_POSTGRES_DSN"]
        events = [e for batch in journal_module.iter_batches(dsn, sealer=SEALER) for e in batch]
        assert [e["document"]["metaData"]["duration"] for e in events if e["event_id"] == "evt-journal-fix"] == [60]
    finally:
        recreate_journal(harness, None)


def check_journal_rules(harness: Harness) -> None:
    dsn = harness.env["SOPHIA_POSTGRES_DSN"]
    connections.discard(dsn)  # this process's cached connection may have been killed by an earlier test
    received = format_version(utcnow())
    event = {"event_id": "evt-journal-fix", "collection": "journal_selftest", "received_at": received,
             "published_at": received, "source": "webhook", "is_test": False,
             "document": {"metaData": {"id": "12", "duration": "broken"}}}
    write_rows(dsn, journal_rows([event], "live", sealer=SEALER))
    write_rows(dsn, journal_rows([event], "live", sealer=SEALER))  # a redelivery changes nothing
    (first,) = journal(harness, "evt-journal-fix")
    write_rows(dsn, journal_rows([event], "live", sealer=SEALER))
    (same,) = journal(harness, "evt-journal-fix")
    assert same["journaled_at"] == first["journaled_at"]
    fixed = dict(event, document={"metaData": {"id": "12", "duration": 60}})
    write_rows(dsn, journal_rows([fixed], "live", sealer=SEALER))  # dlq replay --payload: the fix replaces it
    (after,) = journal(harness, "evt-journal-fix")
    assert after["event"]["document"]["metaData"]["duration"] == 60

    old = dict(event, event_id="evt-journal-old", received_at=format_version(utcnow() - timedelta(days=40)))
    write_rows(dsn, journal_rows([old], "live", sealer=SEALER))
    assert journal(harness, "evt-journal-old")
    dropped = purge_expired(dsn, 30)
    assert len(dropped) == 1 and dropped[0].startswith("sophia_journal_p")
    assert not journal(harness, "evt-journal-old")
    assert journal(harness, "evt-journal-fix"), "today's partition stays"
    write_rows(dsn, journal_rows([old], "live", sealer=SEALER))  # a late replay of an old event recreates its day
    assert journal(harness, "evt-journal-old")
    purge_expired(dsn, 30)


def broker_idle(h: Harness) -> bool:
    """No task waiting, running or scheduled for a retry on this session's broker."""
    broker = redis.Redis.from_url(h.env["SOPHIA_BROKER_URL"])
    try:
        queues = [k for k in broker.scan_iter("sophia.*") if broker.type(k) == b"list"]
        return all(broker.llen(k) == 0 for k in queues) and broker.hlen("unacked") == 0
    finally:
        broker.close()


def test_a_dropped_postgres_table_is_rebuilt_from_the_journal(harness: Harness) -> None:
    since = format_version(utcnow() - timedelta(seconds=1))
    calls = [gong_call(title=f"rebuild {i}", duration=60 * i) for i in range(30)]
    r = harness.post([envelope(c) for c in calls])
    assert r.status_code == 202, r.text
    # Two versions of one call: the newer first, the older after it. The table keeps the newer.
    cid = calls[0]["metaData"]["id"]
    # (The batch's own version is its receipt time, so both updates are dated after it.)
    v2_at, v1_at = format_version(utcnow() + timedelta(hours=2)), format_version(utcnow() + timedelta(hours=1))
    assert harness.post(envelope(gong_call(cid, title="rebuild v2"), occurred_at=v2_at)).status_code == 202
    harness.wait(lambda: harness.pg_rows(cid) and harness.pg_rows(cid)[0][3] == "rebuild v2", 30, "v2")
    assert harness.post(envelope(gong_call(cid, title="rebuild v1"), occurred_at=v1_at)).status_code == 202
    mine = {c["metaData"]["id"] for c in calls}
    harness.wait(lambda: mine <= set(table_rows(harness)), 30, "the calls in PostgreSQL")
    # Give the stale v1 time to be refused, then take the picture.
    marker = gong_call(title="rebuild marker")
    harness.post(envelope(marker))
    mine.add(marker["metaData"]["id"])
    harness.wait(lambda: harness.pg_rows(marker["metaData"]["id"]), 30, "a later call")
    before = {k: v for k, v in table_rows(harness).items() if k in mine}
    assert set(before) == mine and before[cid][2] == "rebuild v2"

    conn = harness.pg()
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE gong_calls_enriched")
    conn.close()
    assert table_rows(harness) == {}

    # A live write while the table is gone recreates it (the materializer forgets its cache once).
    live = gong_call(title="live while dropped")
    assert harness.post(envelope(live)).status_code == 202
    lid = live["metaData"]["id"]
    harness.wait(lambda: harness.pg_rows(lid) and harness.sf_rows(lid) and harness.redis_doc(lid), 30,
                 "the live call everywhere")
    harness.wait(lambda: broker_idle(harness), 60, "an idle broker before the rebuild")
    others = {t: harness.counter("batches_written", target=t, collection="gong_calls_enriched")
              for t in ("redis", "snowflake")}

    # --since keeps the test to its own events (everything journaled since it began); without it the
    # whole journal is replayed the same way.
    out = harness.cli("rebuild", "--target", "postgres", "--since", since, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["target"] == "postgres" and "gong_calls_enriched" in summary["tables_ready"]
    # 30 calls, v2, v1, the marker and the live call, each once.
    assert summary["published"] >= 34 and summary["journaled"] == summary["published"] + summary["skipped_invalid"]

    def rebuilt() -> bool:
        rows = table_rows(harness)
        return all(rows.get(k) == v for k, v in before.items())

    harness.wait(rebuilt, 60, "the dropped rows rebuilt with the same content and versions")
    after = table_rows(harness)
    assert {k: v for k, v in after.items() if k in mine} == before  # same rows, same content
    assert lid in after
    assert after[cid][2] == "rebuild v2"  # the original versions were kept: v1 stays refused
    # Only postgres was written: the other targets saw no rebuild batches.
    harness.wait(lambda: broker_idle(harness), 60, "the rebuild to finish")
    assert {t: harness.counter("batches_written", target=t, collection="gong_calls_enriched")
            for t in ("redis", "snowflake")} == others


def test_rebuild_arguments_fail_in_one_line(harness: Harness) -> None:
    bad = harness.cli("rebuild", "--target", "mongo")
    assert bad.returncode == 1 and "unknown target 'mongo'" in bad.stderr and bad.stderr.count("\n") == 1
    bad_date = harness.cli("rebuild", "--target", "redis", "--since", "someday")
    assert bad_date.returncode == 1 and "--since" in bad_date.stderr
    future = harness.cli("rebuild", "--target", "redis", "--since", "2099-01-01", "--json")
    assert future.returncode == 0, future.stderr
    assert json.loads(future.stdout)["published"] == 0
