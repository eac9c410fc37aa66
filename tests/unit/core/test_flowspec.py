"""The flow spec loader: the shipped spec is valid, and bad specs name file, path and problem."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sophia_tasks.core.flowspec import FlowSpecError, resolve_pointer
from sophia_tasks.flows import load_spec, parse_spec
from sophia_tasks.settings import DEFAULT_FLOW


def shipped() -> dict:
    return yaml.safe_load(DEFAULT_FLOW.read_text())


def test_shipped_flow_is_valid_and_complete() -> None:
    spec = load_spec(DEFAULT_FLOW)
    assert spec.collections["gong_calls"].key == "/metaData/id"
    assert spec.derivations["gong_calls_enriched"].source == "gong_calls"
    assert {m.endpoint for m in spec.materializations.values()} == {"redis", "postgres", "snowflake"}
    assert [m.name for m in spec.materializations_of("gong_calls_enriched")] == ["redis", "postgres", "snowflake"]
    assert spec.materializations["postgres"].bindings[0].table == "gong_calls_enriched"
    assert spec.materializations["snowflake"].bindings[0].key_column == "CALL_ID"
    assert spec.materializations["redis"].bindings[0].ttl_seconds == 86400


def test_rows_for_flows_list() -> None:
    rows = {r["name"]: r for r in load_spec(DEFAULT_FLOW).rows()}
    assert rows["gong_calls_enriched"]["reads_from"] == ["gong_calls"]
    assert rows["postgres"]["writes_to"] == ["postgres:gong_calls_enriched", "postgres:hubspot_deals"]
    assert rows["redis"]["writes_to"] == ["redis:sophia:gong_calls_enriched:*", "redis:sophia:deals:*"]
    assert rows["deal.*"]["type"] == "route" and rows["deal.*"]["writes_to"] == ["hubspot_deals"]
    assert rows["call_deleted"]["detail"] == "envelope type call_deleted (delete)"


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["collections"]["gong_calls"].update(key="metaData.id"),
     "collections.gong_calls.key: must be a JSON pointer"),
    (lambda d: d["collections"]["gong_calls"].update(schema="nope"), "collections.gong_calls.schema: unknown schema"),
    (lambda d: d["derivations"]["gong_calls_enriched"].update(source="missing"),
     "derivations.gong_calls_enriched.source"),
    (lambda d: d["derivations"]["gong_calls_enriched"].update(transform="no.such.module:fn"),
     "cannot import no.such.module"),
    (lambda d: d["materializations"]["redis"].update(endpoint="kafka"),
     "materializations.redis.endpoint: must be one of"),
    (lambda d: d["materializations"]["postgres"]["bindings"][0]["resource"].update(table="x; drop table y"),
     "materializations.postgres.bindings[0].resource.table"),
    (lambda d: d["materializations"]["redis"]["bindings"][0]["resource"].update(ttl_seconds=-5),
     "materializations.redis.bindings[0].resource.ttl_seconds"),
    (lambda d: d["materializations"]["postgres"]["bindings"][0]["resource"]["projections"].update(
        title={"from": "/metaData/title", "type": "varchar"}), "projections.title.type: must be one of"),
    (lambda d: d["materializations"]["postgres"]["bindings"][0]["resource"]["projections"].update(
        flow_document={"from": "/x", "type": "string"}), "clashes with a reserved column"),
    (lambda d: d.update(extra=1), "extra: unknown top-level section"),
])
def test_bad_spec_errors_name_the_path(mutate, expected: str) -> None:
    data = shipped()
    mutate(data)
    with pytest.raises(FlowSpecError) as err:
        parse_spec(data, "flows/test.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("flows/test.yaml:")


def test_all_problems_reported_at_once() -> None:
    data = shipped()
    data["collections"]["gong_calls"]["key"] = "x"
    data["materializations"]["redis"]["endpoint"] = "kafka"
    with pytest.raises(FlowSpecError) as err:
        parse_spec(data, "f.yaml")
    assert len(err.value.problems) == 2


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("collections:\n  gong_calls: {key: /a\n")
    with pytest.raises(FlowSpecError) as err:
        load_spec(bad)
    assert str(bad) in str(err.value) and "line" in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FlowSpecError) as err:
        load_spec(tmp_path / "nope.yaml")
    assert "cannot read" in str(err.value)


def test_resolve_pointer() -> None:
    doc = {"a": {"b/c": [1, {"d": "x"}], "m~n": 2}}
    assert resolve_pointer(doc, "/a/b~1c/1/d") == "x"
    assert resolve_pointer(doc, "/a/m~0n") == 2
    assert resolve_pointer(doc, "/a/missing/x") is None
    assert resolve_pointer(doc, "/a/b~1c/9") is None
    # The same answers twice (the parsed pointer is cached), through any Mapping, and at a list root.
    assert resolve_pointer(doc, "/a/b~1c/1/d") == "x"
    from types import MappingProxyType

    assert resolve_pointer(MappingProxyType({"a": MappingProxyType({"b": 3})}), "/a/b") == 3
    assert resolve_pointer([{"k": 1}, {"k": 2}], "/1/k") == 2
    # A part that is not an index into a list, a scalar on the way, a non-ASCII digit: missing.
    assert resolve_pointer({"l": [5]}, "/l/x") is None
    assert resolve_pointer({"a": "text"}, "/a/b") is None
    assert resolve_pointer({"l": [5, 6, 7]}, "/l/\u00b2") is None
    assert resolve_pointer({"\u00b2": 1}, "/\u00b2") == 1
    assert resolve_pointer(doc, "") is doc and resolve_pointer(doc, "/") is doc


def test_collections_and_derivations_both_give_keys() -> None:
    spec = load_spec(DEFAULT_FLOW)
    doc = {"metaData": {"id": "42"}}
    assert spec.collection("gong_calls").key_of(doc) == "42"
    assert spec.collection("gong_calls_enriched").key_of(doc) == "42"
    assert spec.collection("gong_calls_enriched").key_of({"metaData": {"id": True}}) is None
