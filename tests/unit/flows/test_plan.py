"""The plan's diff: what `flows plan` reports and `flows apply` does or refuses, from live columns."""
from __future__ import annotations

from typing import Any

from sophia_tasks.core.flowspec import Binding, Projection
from sophia_tasks.flows import parse_spec
from sophia_tasks.flows.plan import EXIT_CHANGES, EXIT_NO_CHANGES, Change, Plan, diff_binding, removed_bindings
from sophia_tasks.materializers.postgres import PG_TYPES, PostgresMaterializer
from sophia_tasks.materializers.schema import table_drift
from sophia_tasks.materializers.snowflake import SnowflakeMaterializer

PROJ = (Projection("title", "/metaData/title", "string"), Projection("risk_score", "/enrichment/risk_score", "integer"))
BINDING = Binding(source="calls", resource={"table": "calls", "key_column": "call_id"}, projections=PROJ)
EXPECTED = {"call_id": "text", "flow_document": "jsonb", "flow_published_at": "timestamptz", "title": "text",
            "risk_score": "bigint"}
REQUIRED = ("call_id", "flow_document", "flow_published_at")


def diff(live: dict[str, str] | None, recorded: dict[str, Any] | None = None) -> list[Change]:
    return diff_binding("pg", "postgres", BINDING, EXPECTED, REQUIRED, live, recorded,
                        PostgresMaterializer.manual_type_change)


def applied(columns: dict[str, str] = EXPECTED, pending: list[str] | None = None) -> dict[str, Any]:
    return {"materialization": "pg", "endpoint": "postgres", "table_name": "calls", "source": "calls",
            "columns": dict(columns), "pending_fill": pending or []}


def test_no_change_when_the_table_matches_and_was_recorded() -> None:
    assert diff(dict(EXPECTED), applied()) == []
    assert Plan([]).exit_code == EXIT_NO_CHANGES
    assert "No changes" in Plan([]).render()


def test_new_table_is_created_with_every_column() -> None:
    (change,) = diff(None)
    assert change.action == "create_table" and change.safe
    assert "risk_score bigint" in change.detail and "call_id text" in change.detail
    assert Plan([change]).exit_code == EXIT_CHANGES


def test_new_projection_is_a_safe_add_and_fill() -> None:
    live = {k: v for k, v in EXPECTED.items() if k != "risk_score"}
    (change,) = diff(live, applied(live))
    assert (change.action, change.column, change.type, change.safe) == ("add_column", "risk_score", "bigint", True)
    assert change.projection == PROJ[1]
    assert "filled from the stored documents" in change.describe()


def test_type_change_is_refused_with_the_manual_step() -> None:
    live = dict(EXPECTED, risk_score="text")
    (change,) = diff(live, applied())
    assert change.action == "change_type" and not change.safe
    assert (change.type, change.live_type) == ("bigint", "text")
    assert change.manual is not None and 'ALTER TABLE "calls" DROP COLUMN "risk_score";' in change.manual
    assert "flows apply" in change.manual
    plan = Plan([change])
    assert plan.exit_code == EXIT_CHANGES and plan.refused == [change] and plan.safe == []
    assert "manual step" in plan.render()


def test_snowflake_type_change_names_its_quoted_table() -> None:
    binding = Binding(source="calls", resource={"table": "CALLS", "key_column": "CALL_ID"},
                      projections=(Projection("SCORE", "/s", "number"),))
    sf = SnowflakeMaterializer.__new__(SnowflakeMaterializer)
    expected = sf.expected_columns(binding)
    live = dict(expected, SCORE="NUMBER(38,0)")
    (change,) = diff_binding("sf", "snowflake", binding, expected, sf.required_columns(binding), live, None,
                             sf.manual_type_change)
    assert change.action == "change_type" and change.type == "FLOAT"
    assert change.manual.startswith('ALTER TABLE "CALLS" DROP COLUMN "SCORE";')


def test_missing_key_column_is_refused_never_added() -> None:
    live = {k: v for k, v in EXPECTED.items() if k != "call_id"}
    (change,) = diff(live, applied())
    assert change.action == "missing_required" and not change.safe
    assert "RENAME TO calls_old" in (change.manual or "")


def test_unfinished_fill_is_finished_by_the_next_apply() -> None:
    (change,) = diff(dict(EXPECTED), applied(pending=["risk_score"]))
    assert (change.action, change.column, change.safe) == ("fill_column", "risk_score", True)


def test_a_table_a_worker_created_is_recorded_once() -> None:
    (change,) = diff(dict(EXPECTED), None)
    assert change.action == "record" and change.safe


def test_columns_the_spec_no_longer_projects_are_left_alone() -> None:
    assert table_drift(EXPECTED, dict(EXPECTED, old_column="text")) == []
    assert diff(dict(EXPECTED, old_column="text"), applied()) == []


SPEC = parse_spec({
    "collections": {"calls": {"schema": "gong_call", "key": "/metaData/id"}},
    "materializations": {"pg": {"endpoint": "postgres", "bindings": [
        {"source": "calls", "resource": {"table": "calls", "key_column": "call_id"}}]}},
}, check_imports=False)


def test_removed_binding_is_reported_never_dropped() -> None:
    gone = {"materialization": "pg", "endpoint": "postgres", "table_name": "old_calls", "source": "calls"}
    (change,) = removed_bindings(SPEC, [applied(), gone], lambda e, t: True,
                                 lambda e, t: PostgresMaterializer.manual_drop(t))
    assert (change.action, change.table, change.safe) == ("removed_binding", "old_calls", False)
    assert 'DROP TABLE "old_calls";' in (change.manual or "")
    assert "--forget pg.old_calls" in (change.manual or "")
    assert "no longer bound" in change.detail


def test_removed_binding_whose_table_is_gone_is_forgotten() -> None:
    gone = {"materialization": "pg", "endpoint": "postgres", "table_name": "old_calls", "source": "calls"}
    (change,) = removed_bindings(SPEC, [gone], lambda e, t: False, lambda e, t: "")
    assert change.action == "forget" and change.safe


def test_plan_json_has_no_internal_objects() -> None:
    live = {k: v for k, v in EXPECTED.items() if k != "title"}
    out = Plan(diff(live, applied(live))).to_json()
    assert out["to_apply"] == 1 and out["refused"] == 0 and out["exit_code"] == EXIT_CHANGES
    assert set(out["changes"][0]) >= {"action", "table", "column", "type", "safe", "manual"}
    assert "binding" not in out["changes"][0] and "projection" not in out["changes"][0]


def test_expected_column_types_are_the_create_statement_types() -> None:
    pg = PostgresMaterializer.__new__(PostgresMaterializer)
    assert pg.expected_columns(BINDING) == EXPECTED
    assert {PG_TYPES[p.type] for p in PROJ} == {"text", "bigint"}
