"""``sophia-tasks erase --email``: a person erased from every target, the journal, the dead letters and
the payload in flight; the others untouched; audited by hash; a rebuild does not bring them back."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
import yaml

from sophia_tasks.core.addresses import address_hash
from sophia_tasks.core.documents import format_version, make_document, utcnow
from sophia_tasks.flows import load_spec, parse_spec
from sophia_tasks.materializers import TransientTargetError, get_materializer, register
from sophia_tasks.materializers.base import _REGISTRY
from sophia_tasks.ops.erase import erase_address
from sophia_tasks.settings import load_settings
from tests.integration.conftest import Harness, gong_call
from tests.integration.test_journal_rebuild import broker_idle

STORES = ("journal", "dead_letters", "ingest_buffer", "target_buffers", "claim_checks", "dedupe",
          "redis", "postgres", "snowflake")


def envelope(call: dict[str, Any]) -> dict[str, Any]:
    return {"type": "call_completed", "id": f"evt-erase-{call['metaData']['id']}", "data": call}


def cid(call: dict[str, Any]) -> str:
    return str(call["metaData"]["id"])


def everywhere(h: Harness, key: str) -> bool:
    return bool(h.redis_doc(key) and h.pg_rows(key) and h.sf_rows(key))


def nowhere(h: Harness, key: str) -> bool:
    return not (h.redis_doc(key) or h.pg_rows(key) or h.sf_rows(key))


def journaled_ids(h: Harness, event_ids: list[str]) -> set[str]:
    conn = h.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT event_id FROM sophia_journal WHERE event_id = ANY(%s)", (event_ids,))
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def audit_rows(h: Harness, digest: str) -> list[dict[str, Any]]:
    conn = h.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT t::text AS text, t.* FROM sophia_erasures t WHERE email_sha256 = %s ORDER BY id",
                        (digest,))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()


def erase(h: Harness, *args: str) -> dict[str, Any]:
    out = h.cli("erase", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_erase_by_email_everywhere_and_nothing_brings_it_back(harness: Harness) -> None:
    since = format_version(utcnow() - timedelta(seconds=1))
    address = f"Erin.Erased.{uuid.uuid4().hex[:8]}@Example.org"
    named_party = gong_call(title="erase: a party")
    named_party["parties"][1]["emailAddress"] = address
    named_text = gong_call(title="erase: free text")
    named_text["content"]["brief"] = f"Send the pricing to {address.upper()} before Friday."
    other = gong_call(title="erase: someone else")
    longer = gong_call(title="erase: a longer address")  # k + address: another person
    longer["parties"][1]["emailAddress"] = "k" + address.lower()
    invalid = gong_call(title=12345)  # schema-invalid: dead-lettered with the address in its payload
    invalid["parties"][1]["emailAddress"] = address.lower()
    calls = [named_party, named_text, other, longer]
    assert harness.post([envelope(c) for c in [*calls, invalid]]).status_code == 202
    for call in calls:
        harness.wait(lambda call=call: everywhere(harness, cid(call)), 60, "the calls in every target")
    (letter,) = harness.wait(lambda: harness.dead_letters(document_key=cid(invalid)), 30, "the dead letter")

    # A document whose journal rows are gone (past retention) and whose text names the address
    # (written before masking): found by searching each target.
    settings = load_settings()
    spec = load_spec(settings.flow_path)
    orphan_id = str(uuid.uuid4().int % 10**18)
    now = format_version(utcnow())
    orphan = make_document(gong_call(orphan_id, title="erase: orphan", purpose=f"call {address.lower()}"),
                           {"published_at": now, "event_id": "evt-erase-orphan", "collection": "gong_calls_enriched",
                            "received_at": now, "source": "webhook"})
    for mat in spec.materializations.values():
        assert get_materializer(mat.endpoint, settings, spec).write_batch(mat.bindings[0], [orphan]).written == 1
    assert everywhere(harness, orphan_id)

    # Payload in flight, under keys no worker takes: a cut of the ingest buffer (captured events) and a
    # claim-checked batch (derived, masked documents: found by key).
    broker = redis.Redis.from_url(harness.env["SOPHIA_BROKER_URL"])
    cut, batch = f"sophia:events:erase-test:{uuid.uuid4().hex}", f"sophia:batch:erase-test-{uuid.uuid4().hex}"
    in_flight = [{"event_id": "evt-erase-flight", "collection": "gong_calls", "received_at": now,
                  "published_at": now, "source": "webhook", "is_test": False,
                  "document": gong_call(title="in flight", purpose=address)},
                 {"event_id": "evt-erase-flight-other", "collection": "gong_calls", "received_at": now,
                  "published_at": now, "source": "webhook", "is_test": False, "document": gong_call()}]
    broker.rpush(cut, *[orjson.dumps(e) for e in in_flight])
    masked = [harness.redis_doc(cid(named_party)), harness.redis_doc(cid(other))]
    assert address.lower() not in json.dumps(masked).lower()  # the targets hold masked documents
    broker.set(batch, orjson.dumps(masked), ex=600)
    try:
        expected = {"journal": 3, "dead_letters": 1, "ingest_buffer": 1, "target_buffers": 0, "claim_checks": 1,
                    "dedupe": 0, "redis": 3, "postgres": 3, "snowflake": 3}

        dry = erase(harness, "--email", address, "--dry-run", "--by", "erase-test")
        assert {k: dry["counts"][k] for k in STORES} == expected
        assert dry["dry_run"] is True and dry["errors"] == {}
        for key in (cid(named_party), cid(named_text), orphan_id):
            assert everywhere(harness, key), "a dry run deletes nothing"
        assert harness.dead_letters(document_key=cid(invalid))
        assert len(journaled_ids(harness, [envelope(c)["id"] for c in (named_party, named_text, invalid)])) == 3
        assert broker.llen(cut) == 2 and len(orjson.loads(broker.get(batch))) == 2

        # Any case, with spaces: the same person.
        done = erase(harness, "--email", f"  {address.upper()} ", "--by", "dpo-ticket-4711", "--settle", "0.5")
        assert {k: done["counts"][k] for k in STORES} == expected
        assert done["dry_run"] is False and done["errors"] == {} and done["total"] == sum(expected.values())

        for key in (cid(named_party), cid(named_text), orphan_id):
            assert nowhere(harness, key)
        for call in (other, longer):
            assert everywhere(harness, cid(call))
        assert harness.dead_letters(id=letter["id"]) == []
        assert journaled_ids(harness, [envelope(c)["id"] for c in [*calls, invalid]]) == {
            envelope(other)["id"], envelope(longer)["id"]}
        assert [orjson.loads(e)["event_id"] for e in broker.lrange(cut, 0, -1)] == ["evt-erase-flight-other"]
        assert [d["metaData"]["id"] for d in orjson.loads(broker.get(batch))] == [cid(other)]

        # The audit: both runs, by whom, the counts, the address's hash and never the address.
        digest = address_hash(address)
        first, second = audit_rows(harness, digest)
        assert (first["dry_run"], first["requested_by"], first["status"]) == (True, "erase-test", "done")
        assert (second["dry_run"], second["requested_by"], second["status"]) == (False, "dpo-ticket-4711", "done")
        assert second["counts"] == expected and second["total"] == sum(expected.values())
        assert second["finished_at"] >= second["started_at"]
        assert {cid(named_party), cid(named_text), orphan_id} <= set(second["keys"]["gong_calls_enriched"])
        assert first["keys"] is None  # a dry run erased nothing
        for row in (first, second):
            assert address.lower().split("@")[0] not in row["text"].lower()

        # A rebuild replays the journal: the others come back, the erased never do.
        conn = harness.pg()
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM gong_calls_enriched WHERE call_id = %s", (cid(other),))
        conn.close()
        harness.wait(lambda: broker_idle(harness), 60, "an idle broker before the rebuild")
        rebuilt = harness.cli("rebuild", "--target", "postgres", "--since", since, "--json")
        assert rebuilt.returncode == 0, rebuilt.stderr
        harness.wait(lambda: harness.pg_rows(cid(other)), 60, "the other call rebuilt")
        harness.wait(lambda: broker_idle(harness), 60, "the rebuild to finish")
        for key in (cid(named_party), cid(named_text), cid(invalid)):
            assert not harness.pg_rows(key)
        # ...and the dead letter cannot be replayed: it is gone.
        replay = harness.cli("dlq", "replay", str(letter["id"]))
        assert replay.returncode == 1 and f"no dead letter with id {letter['id']}" in replay.stderr
        assert address.lower() not in json.dumps([r["payload"] for r in harness.dead_letters()]).lower()

        # A document in flight during the erase that lands after it is masked: the keys the audit kept
        # let the next run for the same address find it.
        for mat in spec.materializations.values():
            if mat.name != "snowflake":
                get_materializer(mat.endpoint, settings, spec).write_batch(mat.bindings[0], [masked[0]])
        harness.wait(lambda: harness.redis_doc(cid(named_party)) and harness.pg_rows(cid(named_party)), 10, "late")
        late = erase(harness, "--email", address, "--settle", "0")
        assert {k: v for k, v in late["counts"].items() if v} == {"redis": 1, "postgres": 1}
        assert nowhere(harness, cid(named_party))

        # Nothing is left to find anywhere (the table a person reads).
        again = harness.cli("erase", "--email", address, "--dry-run", "--settle", "0")
        assert again.returncode == 0, again.stderr
        assert "would erase 0 in all" in again.stdout and "dry run" in again.stdout
        assert address.lower() not in (again.stdout + again.stderr).lower()
    finally:
        broker.delete(cut, batch)
        broker.close()


class BrokenTarget:
    """A materialization that cannot be reached when erasing (its searches answer nothing)."""

    name = "broken"

    def __init__(self, *_: Any) -> None:
        pass

    def search(self, binding: Any, address: str) -> list[str]:
        return []

    def erase(self, binding: Any, keys: list[str]) -> int:
        raise TransientTargetError("broken: unreachable")

    def close(self) -> None:
        pass


def test_a_target_that_fails_keeps_the_journal_rows_so_the_same_command_finds_the_person_again(
        harness: Harness) -> None:
    address = f"fay.failed.{uuid.uuid4().hex[:8]}@example.org"
    call = gong_call(title="erase: a target fails")
    call["parties"][1]["emailAddress"] = address
    assert harness.post(envelope(call)).status_code == 202
    harness.wait(lambda: everywhere(harness, cid(call)), 60, "the call in every target")
    settings = load_settings()
    spec = load_spec(settings.flow_path)
    data = yaml.safe_load(Path(settings.flow_path).read_text())
    data["materializations"]["broken"] = {"endpoint": "broken",
                                          "bindings": [{"source": "gong_calls_enriched", "resource": {}}]}
    register("broken", lambda *_: [])(BrokenTarget)  # in this process only: the worker never sees it
    try:
        failed = erase_address(settings, parse_spec(data, base_dir=Path(settings.flow_path).parent), address,
                               by="erase-test")
    finally:
        _REGISTRY.pop("broken", None)
    assert failed.errors == {"broken": "TransientTargetError: broken: unreachable"}
    assert (failed.counts["redis"], failed.counts["postgres"], failed.counts["snowflake"]) == (1, 1, 1)
    assert failed.counts["journal"] == 0 and journaled_ids(harness, [envelope(call)["id"]])  # kept for a rerun
    (row,) = audit_rows(harness, address_hash(address))
    assert row["status"] == "failed" and row["errors"] == failed.errors and address not in row["text"]

    again = erase_address(settings, spec, address, by="erase-test")  # the target is back (here: not in the spec)
    assert again.errors == {} and again.counts["journal"] == 1 and again.total == 1
    assert not journaled_ids(harness, [envelope(call)["id"]]) and nowhere(harness, cid(call))
