"""The stages as plain functions: validate, derive, the poison bisection, backoff."""
from __future__ import annotations

import random

import pytest

from sophia_tasks.flows import load_spec, parse_spec
from sophia_tasks.ingest.events import make_event
from sophia_tasks.materializers import TransientTargetError, WriteResult
from sophia_tasks.pipeline.stages import backoff_seconds, derive_documents, validate_events, write_isolating
from sophia_tasks.settings import DEFAULT_FLOW, Settings


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_FLOW)


def event(call, **kw):
    return make_event("gong_calls", call, kw.pop("event_id", "e1"), "2026-11-25T10:00:00.000000Z",
                      kw.pop("published_at", None), "webhook", **kw)


def test_validate_splits_valid_invalid_and_test(spec) -> None:
    good = {"metaData": {"id": "1", "title": "ok"}}
    bad = {"metaData": {"id": "2", "duration": "long"}, "parties": "x"}
    res = validate_events(spec, [event(good), event(bad, event_id="e2"),
                                 event({"metaData": {"id": "3"}}, event_id="e3", is_test=True)])
    assert [d["metaData"]["id"] for d in res.documents["gong_calls"]] == ["1"]
    doc = res.documents["gong_calls"][0]
    assert list(doc)[0] == "_meta" and doc["_meta"]["published_at"] == "2026-11-25T10:00:00.000000Z"
    (letter,) = res.letters
    assert letter.stage == "validate" and letter.document_key == "2"
    assert "metaData.duration" in letter.error and "parties" in letter.error
    assert [d["metaData"]["id"] for d in res.tests] == ["3"]


def test_unknown_collection_is_a_letter(spec) -> None:
    ev = event({"metaData": {"id": "1"}})
    ev["collection"] = "nope"
    res = validate_events(spec, [ev, "not even a dict"])
    assert len(res.letters) == 2 and "unknown collection" in res.letters[0].error


def test_derive_isolates_a_failing_document(tmp_path) -> None:
    import sys
    import textwrap

    mod = tmp_path / "flaky_transform.py"
    mod.write_text(textwrap.dedent("""
        def derive(documents, config):
            out = []
            for d in documents:
                if d.get("poison"):
                    raise ValueError("boom")
                out.append(dict(d, derived=True))
            return out
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        data = __import__("yaml").safe_load(DEFAULT_FLOW.read_text())
        data["derivations"]["gong_calls_enriched"]["transform"] = "flaky_transform:derive"
        spec = parse_spec(data, "t.yaml")
        docs = [{"_meta": {"published_at": "v", "event_id": f"e{i}"}, "metaData": {"id": str(i)},
                 "poison": i == 2} for i in range(4)]
        res = derive_documents(spec, "gong_calls", docs)
    finally:
        sys.path.remove(str(tmp_path))
    out = res.documents["gong_calls_enriched"]
    assert [d["metaData"]["id"] for d in out] == ["0", "1", "3"]
    assert all(d["derived"] and d["_meta"]["collection"] == "gong_calls_enriched" for d in out)
    (letter,) = res.letters
    assert letter.stage == "derive" and letter.document_key == "2" and "boom" in letter.error


def test_write_isolating_bisects_to_the_poison() -> None:
    calls = []

    def write(docs):
        calls.append(len(docs))
        if any(d.get("poison") for d in docs):
            raise ValueError("bad row")
        return WriteResult(written=len(docs))

    docs = [{"n": i, "poison": i == 5} for i in range(16)]
    res = write_isolating(write, docs)
    assert res.written == 15
    assert [d["n"] for d, _ in res.failed] == [5]
    assert "bad row" in res.failed[0][1]
    assert len(calls) <= 1 + 2 * 4  # log2(16) levels, two halves each


def test_write_isolating_does_not_split_when_target_is_down() -> None:
    calls = []

    def write(docs):
        calls.append(len(docs))
        raise TransientTargetError("down")

    with pytest.raises(TransientTargetError):
        write_isolating(write, [{"n": i} for i in range(8)])
    assert calls == [8]


def test_backoff_grows_with_jitter_and_stays_capped() -> None:
    s = Settings(retry_backoff_base=2.0, retry_backoff_max=60)
    rng = random.Random(1)
    values = [backoff_seconds(s, a, rng) for a in range(1, 12)]
    assert 1.0 <= values[0] <= 2.0
    assert 4.0 <= values[2] <= 8.0
    assert all(v <= 60 for v in values) and max(values) >= 30
    assert len({backoff_seconds(s, 3, random.Random(i)) for i in range(10)}) > 1


def test_failed_stage_tasks_become_letters_at_their_stage() -> None:
    from sophia_tasks.pipeline.failures import letters_for_failed_task

    doc = {"_meta": {"published_at": "v", "event_id": "e9"}, "metaData": {"id": "9"}}
    (m,) = letters_for_failed_task("sophia.materialize", ("snowflake", "gong_calls_enriched", [doc]), {},
                                   KeyError("x"))
    assert (m.stage, m.target, m.collection, m.event_id) == ("materialize", "snowflake", "gong_calls_enriched", "e9")
    (d,) = letters_for_failed_task("sophia.derive", ("gong_calls", [doc]), {}, ValueError("y"))
    assert d.stage == "derive" and d.payload is doc and "ValueError: y" in d.error
    ev = event({"metaData": {"id": "1"}})
    (v,) = letters_for_failed_task("sophia.validate", ([ev],), {}, RuntimeError("z"))
    assert v.stage == "validate" and v.payload["event_id"] == "e1"
    assert letters_for_failed_task("sophia.purge_retention", (), {}, RuntimeError("z")) == []


def test_warm_derivations_builds_the_enrichment_config_once_and_survives_a_broken_transform(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    import sys
    import textwrap

    from sophia_tasks.derivations.gong_enrichment import config as gong_enrichment
    from sophia_tasks.pipeline.stages import warm_derivations

    data = __import__("yaml").safe_load(DEFAULT_FLOW.read_text())
    import uuid

    unique = {"pii_email_fields": ["emailAddress", f"mail_{uuid.uuid4().hex}"]}  # a config nothing built yet
    data["derivations"]["gong_calls_enriched"]["config"] = unique
    spec = parse_spec(data, "t.yaml")
    before = gong_enrichment._resolve_canonical.cache_info()
    warm_derivations(spec)
    after = gong_enrichment._resolve_canonical.cache_info()
    assert after.misses == before.misses + 1  # built here...
    derive_documents(spec, "gong_calls", [{"_meta": {"published_at": "v", "event_id": "e"}, "metaData": {"id": "1"}}])
    assert gong_enrichment._resolve_canonical.cache_info().misses == after.misses  # ...not by the first batch

    mod = tmp_path / "broken_transform.py"
    mod.write_text(textwrap.dedent("""
        def derive(documents, config):
            raise RuntimeError("cannot start")
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        data["derivations"]["gong_calls_enriched"]["transform"] = "broken_transform:derive"
        with caplog.at_level("WARNING"):
            warm_derivations(parse_spec(data, "t.yaml"))
    finally:
        sys.path.remove(str(tmp_path))
    assert "could not be prepared" in caplog.text and "cannot start" in caplog.text


def test_a_delete_needs_only_its_key_and_skips_the_derivation(spec) -> None:
    marked = event({"metaData": {"id": "7"}, "_meta": {"op": "d"}}, event_id="d1")  # marked in the document
    routed = event({"metaData": {"id": "8"}}, event_id="d2")  # a route that declares a delete
    routed["op"] = "d"
    keyless = event({"metaData": {}, "_meta": {"op": "d"}}, event_id="d3")
    res = validate_events(spec, [marked, routed, keyless])
    docs = res.documents["gong_calls"]
    assert [d["metaData"]["id"] for d in docs] == ["7", "8"]
    assert all(d["_meta"]["op"] == "d" and list(d["_meta"])[0] == "published_at" for d in docs)
    (letter,) = res.letters
    assert letter.event_id == "d3" and "delete without a key" in letter.error and "/metaData/id" in letter.error

    derived = derive_documents(spec, "gong_calls", docs + [validate_events(spec, [event(
        {"metaData": {"id": "9", "title": "kept"}}, event_id="u1")]).documents["gong_calls"][0]])
    out = derived.documents["gong_calls_enriched"]
    # The deletes reach the derived collection untransformed, with its name; the upsert is enriched.
    assert [(d["metaData"]["id"], d["_meta"].get("op"), d["_meta"]["collection"]) for d in out] == [
        ("7", "d", "gong_calls_enriched"), ("8", "d", "gong_calls_enriched"), ("9", None, "gong_calls_enriched")]
    assert "enrichment" not in out[0] and "enrichment" in out[2]
    assert not derived.letters


def test_a_json_schema_collection_dead_letters_every_error_and_a_missing_key() -> None:
    data = __import__("yaml").safe_load(DEFAULT_FLOW.read_text())
    data["collections"]["notes"] = {"key": ["/org", "/id"], "schema": {
        "type": "object", "required": ["text"],
        "properties": {"text": {"type": "string"}, "id": {"type": "integer"}, "org": {"type": "string"}}}}
    data["materializations"]["redis"]["bindings"].append({"source": "notes", "resource": {}})
    spec = parse_spec(data, "t.yaml")

    def note(doc, event_id):
        return make_event("notes", doc, event_id, "2026-11-25T10:00:00.000000Z", None, "capture")

    res = validate_events(spec, [note({"org": "a", "id": 1, "text": "ok"}, "e1"),
                                 note({"org": "a", "id": "2", "text": 3, "extra": True}, "e2"),
                                 note({"text": "no key"}, "e3"), note({"id": 4}, "e4")])
    assert [d["text"] for d in res.documents["notes"]] == ["ok"]
    bad, keyless, both = res.letters
    assert bad.details == {"/id": ["'2' is not of type 'integer'"], "/text": ["3 is not of type 'string'"]}
    assert bad.document_key == "a:2"
    assert bad.error.startswith("schema inline JSON Schema: 2 field error(s): ")
    assert "/id: '2' is not of type 'integer'" in bad.error and "/text: 3 is not of type 'string'" in bad.error
    assert keyless.document_key is None and list(keyless.details) == ["/org, /id"]
    assert "the key is missing" in keyless.error
    assert both.details == {"": ["'text' is a required property"], "/org, /id": keyless.details["/org, /id"]}
    assert "(document): 'text' is a required property" in both.error
    # Materialized straight from the collection: derive hands the documents on as they are.
    derived = derive_documents(spec, "notes", res.documents["notes"])
    assert derived.documents == {"notes": res.documents["notes"]}


def test_a_gong_call_with_a_bad_id_is_a_letter_with_the_schema_error(spec) -> None:
    res = validate_events(spec, [event({"metaData": {"id": "12ab"}}), event({"metaData": {}}, event_id="e2")])
    bad_id, no_id = res.letters
    assert bad_id.document_key == "12ab" and "1-32 digits" in bad_id.error
    assert no_id.document_key is None and set(no_id.details) == {"metaData", "/metaData/id"}
