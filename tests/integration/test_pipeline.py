"""End to end: webhook → broker → worker → Redis, PostgreSQL and the Snowflake emulator."""
from __future__ import annotations

import json
import time
import uuid

from tests.integration.conftest import Harness, gong_call


def envelope(call: dict, **extra: object) -> dict:
    return {"type": "call_completed", "data": call, **extra}


def landed_everywhere(h: Harness, call_id: str, title: str | None = None) -> bool:
    doc = h.redis_doc(call_id)
    pg = h.pg_rows(call_id)
    sf = h.sf_rows(call_id)
    if not (doc and pg and sf):
        return False
    if title is not None:
        return doc["metaData"]["title"] == title and pg[0][3] == title and sf[0][3] == title
    return True


def test_posted_call_lands_in_all_three_targets(harness: Harness) -> None:
    call = gong_call()
    cid = call["metaData"]["id"]
    resp = harness.post(envelope(call))
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "accepted" and body["event_id"]

    harness.wait(lambda: landed_everywhere(harness, cid), 30, "the call in every target")
    doc = harness.redis_doc(cid)
    assert doc["_meta"]["collection"] == "gong_calls_enriched"
    assert doc["_meta"]["event_id"] == body["event_id"]
    assert harness.cache.ttl(f"sophia:gong_calls_enriched:{cid}") > 86000

    (pg_id, pg_doc, pg_published, pg_title), = harness.pg_rows(cid)
    assert pg_id == cid and pg_doc["metaData"]["id"] == cid and pg_title == call["metaData"]["title"]
    (sf_id, sf_doc, _, sf_title), = harness.sf_rows(cid)
    assert sf_id == cid and sf_doc["metaData"]["id"] == cid and sf_title == call["metaData"]["title"]

    # And it is served back from the hot cache.
    got = harness.read(f"/v1/collections/gong_calls_enriched/documents/{cid}")
    assert got.status_code == 200 and got.json()["metaData"]["id"] == cid


def test_a_read_refuses_a_stored_value_that_is_not_a_json_object(harness: Harness) -> None:
    """A key under the binding's prefix written by something else is never served as the document."""
    key = f"foreign-{uuid.uuid4().hex[:8]}"
    harness.cache.set(f"sophia:gong_calls_enriched:{key}", b"not json", ex=60)
    got = harness.read(f"/v1/collections/gong_calls_enriched/documents/{key}")
    assert got.status_code == 500 and got.json()["error"] == "stored document is not JSON", got.text
    harness.cache.set(f"sophia:gong_calls_enriched:{key}", b'{"cut": "sho', ex=60)  # cut short
    assert harness.read(f"/v1/collections/gong_calls_enriched/documents/{key}").status_code == 500
    harness.cache.delete(f"sophia:gong_calls_enriched:{key}")
    assert harness.read(f"/v1/collections/gong_calls_enriched/documents/{key}").status_code == 404


def test_duplicate_delivery_lands_once(harness: Harness) -> None:
    call = gong_call()
    cid = call["metaData"]["id"]
    first = harness.post(envelope(call, id=f"evt-{cid}"))
    assert first.status_code == 202
    again = harness.post(envelope(call, id=f"evt-{cid}"))
    assert again.status_code == 200, again.text
    assert again.json() == {"status": "duplicate", "event_id": f"evt-{cid}"}
    # The same call under another event id (a rule re-run) is accepted but still one row.
    other = harness.post(envelope(call, id=f"evt-{cid}-rerun"))
    assert other.status_code == 202
    harness.wait(lambda: landed_everywhere(harness, cid), 30, "the call in every target")
    time.sleep(1.0)
    assert len(harness.pg_rows(cid)) == 1
    assert len(harness.sf_rows(cid)) == 1
    assert len(harness.cache.keys(f"sophia:gong_calls_enriched:{cid}*")) == 1


def test_older_version_never_overwrites_newer(harness: Harness) -> None:
    cid = gong_call()["metaData"]["id"]
    newer = gong_call(cid, title="v2 - outcome set")
    older = gong_call(cid, title="v1 - first delivery")
    r = harness.post(envelope(newer, occurred_at="2026-11-20T21:00:00Z"))
    assert r.status_code == 202
    harness.wait(lambda: landed_everywhere(harness, cid, "v2 - outcome set"), 30, "v2 everywhere")
    r = harness.post(envelope(older, occurred_at="2026-11-20T20:30:00Z"))
    assert r.status_code == 202
    # Give the older version every chance to land, then check it did not.
    marker = gong_call()
    harness.post(envelope(marker))
    harness.wait(lambda: landed_everywhere(harness, marker["metaData"]["id"]), 30, "a later call")
    time.sleep(1.0)
    assert landed_everywhere(harness, cid, "v2 - outcome set")
    # A genuinely newer version does replace it.
    newest = gong_call(cid, title="v3 - updated")
    harness.post(envelope(newest, occurred_at="2026-11-21T09:00:00+02:00"))
    harness.wait(lambda: landed_everywhere(harness, cid, "v3 - updated"), 30, "v3 everywhere")


def test_schema_invalid_call_is_dead_lettered_then_replayed_after_the_fix(harness: Harness, tmp_path) -> None:
    call = gong_call()
    cid = call["metaData"]["id"]
    call["metaData"]["duration"] = "half an hour"
    call["parties"] = "everyone"
    r = harness.post(envelope(call))
    assert r.status_code == 202  # the envelope is fine; the schema check is the pipeline's
    letters = harness.wait(lambda: harness.dead_letters(document_key=cid), 30, "a dead letter")
    (letter,) = letters
    assert letter["stage"] == "validate" and letter["status"] == "pending"
    assert "duration" in json.dumps(letter["details"]) and "parties" in json.dumps(letter["details"])
    assert "2 field error(s)" in letter["error"]
    assert harness.redis_doc(cid) is None

    shown = harness.cli("dlq", "show", str(letter["id"]))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["details"] == letter["details"]
    listed = harness.cli("dlq", "list", "--json", "--stage", "validate")
    assert letter["id"] in [row["id"] for row in json.loads(listed.stdout)]

    fixed = gong_call(cid)
    path = tmp_path / "fixed.json"
    path.write_text(json.dumps(fixed))
    out = harness.cli("dlq", "replay", str(letter["id"]), "--payload", str(path))
    assert out.returncode == 0, out.stderr
    assert "replayed 1" in out.stdout
    harness.wait(lambda: landed_everywhere(harness, cid), 30, "the fixed call in every target")
    assert harness.dead_letters(document_key=cid)[0]["status"] == "replayed"


def test_failing_target_recovers_and_never_delays_the_others(harness: Harness) -> None:
    stack = harness.stack
    before = harness.counter("errors", stage="materialize", target="snowflake", reason="unreachable")
    stack.stop("snowflake")
    try:
        call = gong_call()
        cid = call["metaData"]["id"]
        sent = time.monotonic()
        assert harness.post(envelope(call)).status_code == 202
        harness.wait(lambda: harness.redis_doc(cid) and harness.pg_rows(cid), 10, "redis and postgres")
        fast = time.monotonic() - sent
        assert fast < 5, f"redis/postgres took {fast:.1f}s while snowflake was down"
        harness.wait(lambda: harness.counter("errors", stage="materialize", target="snowflake",
                                             reason="unreachable") >= before + 2, 30, "two failed attempts")
    finally:
        stack.start_snowflake()
    harness.wait(lambda: harness.sf_rows(cid), 60, "the call in snowflake after recovery")
    assert not harness.dead_letters(document_key=cid)


def test_batch_body_is_one_request_many_events(harness: Harness) -> None:
    calls = [gong_call() for _ in range(25)]
    items = [envelope(c) for c in calls[:20]] + [{"callData": c, "isTest": False} for c in calls[20:]]
    r = harness.post(items)
    assert r.status_code == 202, r.text
    assert len(r.json()["event_ids"]) == 25
    for c in calls:
        harness.wait(lambda c=c: landed_everywhere(harness, c["metaData"]["id"]), 30, "every call of the batch")


def test_ndjson_and_gong_test_delivery(harness: Harness) -> None:
    real = gong_call()
    test = gong_call()
    raw = (json.dumps({"callData": real, "isTest": False}) + "\n" +
           json.dumps({"callData": test, "isTest": True}) + "\n").encode()
    r = harness.post(None, raw=raw, headers={"Content-Type": "application/x-ndjson"}, path="/webhooks/gong")
    assert r.status_code == 202, r.text
    harness.wait(lambda: landed_everywhere(harness, real["metaData"]["id"]), 30, "the real call")
    harness.wait(lambda: harness.counter("test_deliveries", collection="gong_calls") >= 1, 10, "the test delivery")
    assert harness.redis_doc(test["metaData"]["id"]) is None
    assert not harness.pg_rows(test["metaData"]["id"])


def test_rotated_token_and_seed_curl_line(harness: Harness) -> None:
    call = gong_call()
    # curl -d sends application/x-www-form-urlencoded; the seed's line must work as written.
    r = harness.post(envelope(call), token=None, headers={
        "Authorization": f"Bearer {harness.env['SOPHIA_WEBHOOK_TOKENS'].split(',')[1]}",
        "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 202, r.text
    harness.wait(lambda: landed_everywhere(harness, call["metaData"]["id"]), 30, "the call")


def test_metrics_and_readiness(harness: Harness) -> None:
    ready = harness.http.get(harness.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"broker": "ok", "redis": "ok", "postgres": "ok",
                                                                "workers": "ok"}
    assert harness.http.get(harness.url + "/healthz").json() == {"status": "ok"}
    call = gong_call()
    harness.post(envelope(call))
    harness.wait(lambda: landed_everywhere(harness, call["metaData"]["id"]), 30, "the call")
    text = harness.read("/metrics").text
    for name in ("estuary_flow_lag_seconds_bucket", "estuary_flow_throughput_eps", "estuary_flow_errors_total",
                 "estuary_materialization_lag_bytes", "sophia_queue_length", "sophia_dead_letters"):
        assert name in text, name
    assert 'estuary_flow_lag_seconds_count{target="redis"}' in text
    spec = harness.http.get(harness.url + "/openapi.json").json()
    assert "/estuary/webhook" in spec["paths"]


def test_batches_travel_by_claim_check_and_nothing_is_left_behind(harness: Harness) -> None:
    """On a Redis broker the derived batch is stored once beside the broker; the last target deletes it,
    and a materialize message redelivered after that is settled quietly (no error, no dead letter)."""
    import time as time_mod

    import redis as redis_lib
    from celery import Celery

    from sophia_tasks.flows import load_spec
    from sophia_tasks.messaging.config import configure
    from sophia_tasks.pipeline.claim_checks import PREFIX
    from sophia_tasks.settings import load_settings

    broker = redis_lib.Redis.from_url(harness.env["SOPHIA_BROKER_URL"])
    calls = [gong_call() for _ in range(3)]
    assert harness.post([envelope(c) for c in calls]).status_code == 202
    for c in calls:
        harness.wait(lambda c=c: landed_everywhere(harness, c["metaData"]["id"]), 30, "the calls in every target")
    harness.wait(lambda: not [k for k in broker.scan_iter(match=PREFIX + "*")], 15, "every batch released")

    settings = load_settings(harness.env)
    app = Celery("probe", set_as_current=False)
    configure(app, settings, load_spec(settings.flow_path))
    letters_before = len(harness.dead_letters())
    done_before = harness.counter("documents_written", target="postgres", collection="gong_calls_enriched")
    gone = {"$batch": PREFIX + "already-settled", "n": 3, "bytes": 100, "at": int(time_mod.time())}
    app.send_task("sophia.materialize", args=["postgres", "gong_calls_enriched", gone],
                  queue=settings.queue("sophia.materialize.postgres"))
    log = harness.stack.processes["worker"].log_path
    settled = "already-settled of gong_calls_enriched already settled"
    harness.wait(lambda: settled in log.read_text(errors="replace"), 30, "the worker to take the message")
    assert len(harness.dead_letters()) == letters_before
    assert harness.counter("documents_written", target="postgres", collection="gong_calls_enriched") == done_before


def test_large_documents_are_stored_lz4_compressed(harness: Harness) -> None:
    """Documents over PostgreSQL's TOAST threshold are compressed with lz4 (cheaper than pglz); the
    journal's copy is sealed (SOPHIA_DATA_KEYS), so it holds no call in clear and has nothing to compress."""
    from tests.fixtures.gong_generator import generate_calls

    call = max(generate_calls(64), key=lambda c: len(json.dumps(c)))
    cid = str(7_000_000_000_000 + uuid.uuid4().int % 10**9)
    call["metaData"]["id"] = cid
    assert len(json.dumps(call)) > 4000
    accepted = harness.post(envelope(call))
    assert accepted.status_code == 202
    harness.wait(lambda: harness.pg_rows(cid), 30, "the call in PostgreSQL")
    conn = harness.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_column_compression(flow_document) FROM gong_calls_enriched WHERE call_id = %s",
                        (cid,))
            assert cur.fetchone() == ("lz4",)
            cur.execute("SELECT event->>'$sealed' IS NOT NULL, event::text FROM sophia_journal WHERE event_id = %s",
                        (accepted.json()["event_id"],))
            sealed, text = cur.fetchone()
            assert sealed and cid not in text
    finally:
        conn.close()
