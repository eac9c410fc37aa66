"""The flow spec's flows: keys (single and composite), schemas (registered, JSON Schema inline and in a
file), routes and their precedence, and errors that name the known things."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sophia_tasks.core.flowspec import FlowSpecError, Route, Routes
from sophia_tasks.flows import load_spec, parse_spec
from sophia_tasks.settings import DEFAULT_FLOW

PASSTHROUGH = "sophia_tasks.derivations.passthrough:derive"
INLINE = {"type": "object", "required": ["name"],
          "properties": {"name": {"type": "string"}, "n": {"type": "integer", "minimum": 0}}}


def minimal(**collections: Any) -> dict[str, Any]:
    """A spec of its own: the given collections, each bound straight to Redis."""
    return {"collections": collections,
            "materializations": {"redis": {"endpoint": "redis", "bindings": [
                {"source": name, "resource": {}} for name in collections]}}}


def problems_of(data: Any, **kw: Any) -> list[str]:
    with pytest.raises(FlowSpecError) as err:
        parse_spec(data, "t.yaml", **kw)
    return err.value.problems


# -- keys ---------------------------------------------------------------------------------
def test_single_key_is_the_value_as_is() -> None:
    c = parse_spec(minimal(things={"schema": INLINE, "key": "/id"})).collections["things"]
    assert c.keys == ("/id",) and c.key == "/id"
    assert c.key_of({"id": "a:b/c"}) == "a:b/c"
    assert c.key_of({"id": 42}) == "42"
    for missing in ({}, {"id": None}, {"id": ""}, {"id": True}, {"id": {"x": 1}}, {"id": [1]}):
        assert c.key_of(missing) is None, missing


def test_composite_key_joins_percent_encoded_parts() -> None:
    c = parse_spec(minimal(deals={"schema": INLINE, "key": ["/portal", "/deal/id"]})).collections["deals"]
    assert c.keys == ("/portal", "/deal/id") and c.key == "/portal, /deal/id"
    assert c.key_of({"portal": 42, "deal": {"id": "9001"}}) == "42:9001"
    # ":" and "%" inside a part are encoded, so two different documents never share a key.
    assert c.key_of({"portal": "a:b", "deal": {"id": "c"}}) == "a%3Ab:c"
    assert c.key_of({"portal": "a", "deal": {"id": "b:c"}}) == "a:b%3Ac"
    assert c.key_of({"portal": "100%", "deal": {"id": "x y"}}) == "100%25:x%20y"
    assert c.key_of({"portal": 42}) is None
    assert c.key_of({"portal": 42, "deal": {"id": ""}}) is None


def test_a_derivation_inherits_a_composite_key() -> None:
    data = minimal(deals={"schema": INLINE, "key": ["/a", "/b"]})
    data["derivations"] = {"deals_copy": {"source": "deals", "transform": PASSTHROUGH}}
    spec = parse_spec(data)
    assert spec.derivations["deals_copy"].keys == ("/a", "/b")
    assert spec.collection("deals_copy").key_of({"a": 1, "b": 2}) == "1:2"


@pytest.mark.parametrize("key, expected", [
    ("id", "collections.c.key: must be a JSON pointer"),
    ([], "collections.c.key: a composite key needs at least one JSON pointer"),
    (["/a", "b"], "collections.c.key[1]: must be a JSON pointer"),
    (["/a", "/a"], "collections.c.key: a pointer appears twice"),
    (None, "collections.c.key: must be a JSON pointer"),
])
def test_bad_keys(key: Any, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems_of(minimal(c={"schema": INLINE, "key": key})))


# -- schemas ----------------------------------------------------------------------------------
def test_registered_inline_and_file_schemas(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "thing.schema.json").write_text(json.dumps(INLINE))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(INLINE))
    spec_file = tmp_path / "flow.yaml"
    spec_file.write_text(yaml.safe_dump(minimal(
        calls={"schema": "gong_call", "key": "/metaData/id"},
        inline={"schema": INLINE, "key": "/name"},
        filed={"schema": "schemas/thing.schema.json", "key": "/name"},
        yamled={"schema": "other.yaml", "key": "/name"})))
    spec = load_spec(spec_file)  # files are relative to the spec file, wherever the process runs
    assert spec.collections["calls"].schema == "gong_call" and spec.collections["calls"].json_schema is None
    assert spec.collections["inline"].schema == "inline JSON Schema"
    assert spec.collections["filed"].schema == "schemas/thing.schema.json"
    for name in ("inline", "filed", "yamled"):
        validate = spec.collections[name].validator
        assert validate({"name": "x", "n": 1}) == ({"name": "x", "n": 1}, {})
        body, errors = validate({"n": -1, "extra": True})
        assert body is None and set(errors) == {"", "/n"}


def test_json_schema_errors_are_all_listed_by_pointer() -> None:
    schema = {"type": "object", "required": ["a", "b"],
              "properties": {"a": {"type": "string"}, "list": {"type": "array", "items": {"type": "integer"}},
                             "odd/key": {"const": 1}}}
    validate = parse_spec(minimal(c={"schema": schema, "key": "/a"})).collections["c"].validator
    body, errors = validate({"list": [1, "two", 3.5], "odd/key": 2})
    assert body is None
    assert errors == {
        "": ["'a' is a required property", "'b' is a required property"],
        "/list/1": ["'two' is not of type 'integer'"],
        "/list/2": ["3.5 is not of type 'integer'"],
        "/odd~1key": ["1 was expected"],
    }
    assert validate("not an object") == (None, {"": ["'not an object' is not of type 'object'"]})


def test_bad_json_schemas_are_reported_with_their_path(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "wrong.json").write_text(json.dumps({"type": "objekt", "properties": {"a": {"minimum": "0"}}}))
    problems = problems_of(minimal(
        inline={"schema": {"type": 12}, "key": "/a"},
        missing={"schema": "nowhere.json", "key": "/a"},
        broken={"schema": "broken.json", "key": "/a"},
        wrong={"schema": "wrong.json", "key": "/a"},
        draft={"schema": {"$schema": "http://json-schema.org/draft-07/schema#"}, "key": "/a"},
        named={"schema": "no_such_schema", "key": "/a"},
        none={"key": "/a"}), base_dir=tmp_path)
    text = "\n".join(problems)
    assert "collections.inline.schema: /type: 12 is not valid" in text
    assert f"collections.missing.schema: cannot read the JSON Schema file {tmp_path / 'nowhere.json'}" in text
    assert f"collections.broken.schema: the JSON Schema file {tmp_path / 'broken.json'} is not valid JSON" in text
    assert f"collections.wrong.schema ({tmp_path / 'wrong.json'}): /properties/a/minimum: '0' is not of type" in text
    assert f"collections.wrong.schema ({tmp_path / 'wrong.json'}): /type: 'objekt' is not valid" in text
    assert "collections.draft.schema: $schema: only https://json-schema.org/draft/2020-12/schema" in text
    assert "collections.named.schema: unknown schema 'no_such_schema'; known schemas: gong_call" in text
    assert "collections.none.schema: required" in text


def test_flows_validate_reports_a_bad_schema_with_its_path(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sophia_tasks.cli import main

    data = yaml.safe_load(DEFAULT_FLOW.read_text())
    data["collections"]["hubspot_deals"]["schema"] = {"type": "object", "properties": {"x": {"type": "nope"}}}
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["flows", "validate", str(path)])
    assert result.exit_code == 1
    assert "collections.hubspot_deals.schema: /properties/x/type: 'nope' is not valid" in result.output


# -- routes -------------------------------------------------------------------------------------
def test_routes_exact_names_win_then_the_longest_pattern() -> None:
    routes = Routes(routes=(Route("*", "any"), Route("deal.*", "deals"), Route("deal.deletion", "deals", "d"),
                            Route("deal.prop*", "props"), Route("*.created", "created")))
    assert routes.resolve("deal.deletion") == Route("deal.deletion", "deals", "d")
    assert routes.resolve("deal.propertyChange").collection == "props"
    assert routes.resolve("deal.creation").collection == "deals"
    assert routes.resolve("contact.created").collection == "created"
    assert routes.resolve("deal.created").collection == "created"  # "*.created" is longer than "deal.*"
    tie = Routes(routes=(Route("ab*", "first"), Route("*bc", "second")))
    assert tie.resolve("abc").collection == "first"  # patterns of one length: the first declared
    assert routes.resolve("anything").collection == "any"
    assert Routes(routes=(Route("call_*", "calls"),)).resolve("meeting") is None
    assert Route("a*b*c", "x").matches("a-b-c") and not Route("a*b*c", "x").matches("a-c")
    assert Route("a.b", "x").matches("a.b") and not Route("a.b", "x").matches("aXb")


def test_the_shipped_routes() -> None:
    spec = load_spec(DEFAULT_FLOW)
    r = spec.routes
    assert r.resolve("call_completed") == Route("call_completed", "gong_calls")
    assert r.resolve("call_deleted") == Route("call_deleted", "gong_calls", "d")
    assert r.resolve("deal.deletion") == Route("deal.deletion", "hubspot_deals", "d")
    assert r.resolve("deal.propertyChange") == Route("deal.*", "hubspot_deals")
    assert r.resolve("call_scheduled") is None
    assert r.wrappers == {"callData": "call_completed"}
    assert r.known() == ["call_completed", "call_updated", "call_deleted", "deal.deletion", "deal.*"]


@pytest.mark.parametrize("routes, wrappers, expected", [
    ({"x.*": "nope"}, None, "routes.x.*: 'nope' is not a collection of this spec; known collections: a, b"),
    ({"x": "a_copy"}, None, "routes.x: 'a_copy' is a derivation; a route must name a collection (a, b)"),
    ({"x": {"collection": "a", "op": "remove"}}, None, "routes.x.op: must be delete, got 'remove'"),
    ({"x": {"collection": "a", "mode": 1}}, None, "routes.x.mode: unknown setting (known: collection, op)"),
    ({"has space": "a"}, None, "routes.has space: a type must be a non-empty string without spaces"),
    (["a"], None, "routes: must be a mapping"),
    ({"x": "a"}, {"payload": "y"}, "wrappers.payload: 'y' is not a type of the routes; known types: x"),
    ({"x": "a"}, {"data": "x"}, "wrappers.data: a body field name other than type, data, id and isTest"),
])
def test_bad_routes_name_the_known_things(routes: Any, wrappers: Any, expected: str) -> None:
    data = minimal(a={"schema": INLINE, "key": "/name"}, b={"schema": INLINE, "key": "/name"})
    data["derivations"] = {"a_copy": {"source": "a", "transform": PASSTHROUGH}}
    data["routes"] = routes
    if wrappers is not None:
        data["wrappers"] = wrappers
    assert any(expected in p for p in problems_of(data)), problems_of(data)


def test_a_spec_without_routes_has_none() -> None:
    spec = parse_spec(minimal(a={"schema": INLINE, "key": "/name"}))
    assert spec.routes.routes == () and spec.routes.resolve("anything") is None


def test_the_test_spec_is_the_shipped_flow_plus_test_events() -> None:
    """The integration session's spec (tests/fixtures/flows/test_flow.yaml) must not drift from the shipped one."""
    test_flow = Path(__file__).resolve().parents[2] / "fixtures" / "flows" / "test_flow.yaml"
    shipped, test = load_spec(DEFAULT_FLOW), load_spec(test_flow)
    assert set(test.collections) - set(shipped.collections) == {"test_events"}
    for name, c in shipped.collections.items():
        assert (test.collections[name].keys, test.collections[name].json_schema) == (c.keys, c.json_schema)
    assert test.derivations == shipped.derivations
    assert set(test.routes.routes) - set(shipped.routes.routes) == {
        Route("test.*", "test_events"), Route("test.removed", "test_events", "d")}
    assert test.routes.wrappers == shipped.routes.wrappers
    for name, m in shipped.materializations.items():
        extra = [b for b in test.materializations[name].bindings if b not in m.bindings]
        assert [b.source for b in extra] == ["test_events"]
    assert test.journal_retention_days == shipped.journal_retention_days
    shipped_alerts = yaml.safe_load(DEFAULT_FLOW.read_text())["alerts"]
    assert yaml.safe_load(test_flow.read_text())["alerts"] == shipped_alerts
