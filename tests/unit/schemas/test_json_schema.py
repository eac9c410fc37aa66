"""The JSON Schema (2020-12) validator adapter: every error by pointer, bounded, never raising."""
from __future__ import annotations

from sophia_tasks.schemas.json_schema import MAX_ERRORS, compile_validator, schema_problems


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
