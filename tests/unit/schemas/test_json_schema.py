"""The JSON Schema (2020-12) validator adapter: every error by pointer, bounded, never raising."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sophia_tasks.schemas.json_schema import MAX_ERRORS, compile_check, compile_validator, schema_problems


def test_valid_documents_come_back_unchanged() -> None:
    doc = {"a": 1, "nested": {"x": [1, 2]}}
    assert compile_validator({"type": "object"})(doc) == (doc, {})
    assert compile_validator(True)(doc) == (doc, {})


def test_every_error_is_kept_with_its_pointer() -> None:
    validate = compile_validator({"type": "object", "properties": {
        "items": {"type": "array", "items": {"type": "object", "required": ["id"],
                                             "properties": {"id": {"type": "string"}}}}}})
    body, errors = validate({"items": [{"id": 1}, {}, {"id": "ok"}, "x"]})
    assert body is None
    assert errors == {"/items/0/id": ["1 is not of type 'string'"], "/items/1": ["'id' is a required property"],
                      "/items/3": ["'x' is not of type 'object'"]}


def test_errors_are_bounded() -> None:
    validate = compile_validator({"type": "array", "items": {"type": "string"}})
    _, errors = validate(list(range(MAX_ERRORS + 50)))
    assert sum(len(v) for k, v in errors.items() if k) == MAX_ERRORS
    assert errors[""] == ["50 more error(s) not listed"]


def test_a_schema_that_cannot_be_applied_is_an_error_not_an_exception() -> None:
    validate = compile_validator({"$ref": "https://example.invalid/nowhere.json"})
    body, errors = validate({"a": 1})
    assert body is None and errors[""][0].startswith("the schema cannot be applied: ")


def test_schema_problems() -> None:
    assert schema_problems({"type": "object", "properties": {"a": {"type": "string"}}}) == []
    assert schema_problems({"type": "object", "required": "a"}) == ["/required: 'a' is not of type 'array'"]
    assert schema_problems([1]) == ["must be a JSON Schema (an object), got list"]
    assert schema_problems({"$schema": "https://json-schema.org/draft/2020-12/schema#"}) == []


# -- the fast path: what the compiled check accepts, jsonschema accepts --------------------------------
PROPERTY_SCHEMA = {
    "type": "object", "required": ["id"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]{1,5}$"},
        "n": {"type": "integer", "minimum": 0, "maximum": 100},
        "x": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "name": {"type": "string", "minLength": 1, "maxLength": 5},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3, "uniqueItems": True},
        "kind": {"enum": ["a", "b", 1, None]},
        "nested": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "one": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "when": {"type": "string", "format": "date-time"},
    },
    "additionalProperties": {"not": {"type": "array"}},
}
FAST, SLOW = compile_validator(PROPERTY_SCHEMA), compile_validator(PROPERTY_SCHEMA, fast=False)
FAST_CHECK = compile_check(PROPERTY_SCHEMA)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 200) | st.floats(-5, 5, allow_nan=False)
    | st.text(alphabet="0123456789ab \n٣", max_size=7),
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "c"]), ch, max_size=3),
    max_leaves=10)
_documents = st.dictionaries(st.sampled_from([*PROPERTY_SCHEMA["properties"], "other", "more"]), _values,
                             max_size=6)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_the_fast_check_never_accepts_what_jsonschema_refuses(document: dict) -> None:
    if FAST_CHECK(document):
        assert SLOW(document) == (document, {})
    assert FAST(document) == SLOW(document)  # the answers are jsonschema's, errors included


def test_the_fast_check_is_used_and_a_document_it_cannot_read_still_gets_an_answer() -> None:
    assert compile_check({"type": "object"}) is not None
    assert compile_check({"$ref": "https://example.invalid/x.json"}) is None
    validate = compile_validator({"type": "object", "required": ["a"]})
    assert validate({1: "int key"}) == (None, {"": ["'a' is a required property"]})
    assert validate({"a": (1, 2)}) == ({"a": (1, 2)}, {})
