"""What the SQL targets send, checked without a server: identifiers quoted, values bound."""
from __future__ import annotations

import json

import psycopg2
import pytest

from sophia_tasks.flows import load_spec
from sophia_tasks.materializers.postgres import PostgresMaterializer
from sophia_tasks.materializers.projection import coerce, keyed, project
from sophia_tasks.materializers.snowflake import SnowflakeMaterializer, _chunks, quote_ident
from sophia_tasks.settings import DEFAULT_FLOW, Settings
from sophia_tasks.store.db import jsonb_text


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_FLOW)


def test_jsonb_text_replaces_nul_but_keeps_escaped_backslashes() -> None:
    text = jsonb_text({"a": "x\x00y", "b": "lit\\u0000eral"})
    assert "\\u0000" not in text.replace("\\\\u0000", "")
    assert json.loads(text) == {"a": "x\ufffdy", "b": "lit\\u0000eral"}


@pytest.mark.parametrize("value, ptype, expected", [
    ("42", "integer", None), (42.9, "integer", 42), (True, "integer", None), (2**70, "integer", None),
    ("x", "number", None), (float("nan"), "number", None), (3, "number", 3.0),
    ({"a": 1}, "string", None), (12, "string", "12"),
    ("2026-11-20T15:00:00-05:00", "timestamp", "2026-11-20T20:00:00.000000Z"), ("soon", "timestamp", None),
    ("yes", "boolean", None), (False, "boolean", False), (None, "object", None), ([1], "object", [1]),
])
def test_coerce_never_raises(value, ptype, expected) -> None:
    assert coerce(value, ptype) == expected


def test_keyed_splits_keyless(spec) -> None:
    binding = spec.materializations["postgres"].bindings[0]
    ok, bad = keyed(spec, binding, [{"metaData": {"id": "1"}}, {"metaData": {}}, {"metaData": {"id": {"x": 1}}}])
    assert [k for k, _ in ok] == ["1"]
    assert len(bad) == 2 and "no key at /metaData/id" in bad[0][1]


def test_project_follows_binding(spec) -> None:
    binding = spec.materializations["postgres"].bindings[0]
    doc = {"metaData": {"title": "T", "started": "2026-11-20T15:00:00Z", "duration": 60},
           "enrichment": {"risk_score": 40}}
    assert project(doc, binding.projections) == ["T", "2026-11-20T15:00:00.000000Z", 60.0, 40]


def test_postgres_upsert_is_conditional_and_quoted(spec) -> None:
    binding = spec.materializations["postgres"].bindings[0]
    mat = PostgresMaterializer(Settings(), spec)
    conn = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        text = mat._upsert_statement(binding).as_string(conn)
    finally:
        conn.close()
    assert text.startswith('INSERT INTO "gong_calls_enriched" AS t ("call_id", "flow_document"')
    assert 'ON CONFLICT ("call_id") DO UPDATE SET "flow_document" = EXCLUDED."flow_document"' in text
    assert text.endswith("WHERE t.flow_published_at <= EXCLUDED.flow_published_at")


def test_snowflake_merge_binds_one_json_array(spec) -> None:
    binding = spec.materializations["snowflake"].bindings[0]
    text = SnowflakeMaterializer(Settings(), spec).merge_statement(binding)
    assert text.count("?") == 1
    assert 'MERGE INTO "GONG_CALLS_ENRICHED"' in text
    assert 'WHEN MATCHED AND s."FLOW_PUBLISHED_AT" >= "GONG_CALLS_ENRICHED"."FLOW_PUBLISHED_AT"' in text
    assert "f.value:x3::NUMBER(38,0) AS \"RISK_SCORE\"" in text
    assert quote_ident('we"ird') == '"we""ird"'


def test_snowflake_chunks_by_bytes() -> None:
    rows = [b"x" * 10] * 10
    chunks = _chunks(rows, 35)
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert sum(len(c) for c in chunks) == 10


def test_postgres_errors_classified_by_sqlstate() -> None:
    from sophia_tasks.materializers.postgres import _transient

    class Err(psycopg2.OperationalError):
        def __init__(self, code):
            super().__init__("x")
            self._code = code

        @property
        def pgcode(self):  # type: ignore[override]
            return self._code

    assert _transient(Err("57P01")) and _transient(Err("08006")) and _transient(Err("55P03"))
    assert not _transient(Err("54000"))  # index row too large: the document, not the server
    assert not _transient(psycopg2.errors.UniqueViolation())
    assert _transient(psycopg2.InterfaceError("connection already closed"))
