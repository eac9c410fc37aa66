"""The compiled accept-check agrees with marshmallow on every JSON value, and is used."""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import INCLUDE, RAISE, Schema, fields, validate

from sophia_tasks.schemas import gong
from sophia_tasks.schemas.fast import compile_schema
from sophia_tasks.schemas.fields import CALL_ID_RE
from sophia_tasks.schemas.gong import GongCallSchema

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "gong_calls_corpus.ndjson"
ACCEPTS = compile_schema(GongCallSchema())

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**20) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
ISO = st.datetimes(timezones=OFFSETS | st.timezones()).map(lambda d: d.isoformat())
NAIVE_ISO = st.datetimes().map(lambda d: d.isoformat())


def marshmallow_accepts(call: Any) -> bool:
    return isinstance(call, dict) and not GongCallSchema().validate(call)


def value_for(field: fields.Field, depth: int, junk: bool = True) -> st.SearchStrategy[Any]:
    """Valid values of the field (weighted) mixed with wrong types, nulls and junk
    (``junk=False``: valid values only, and null where the field allows it)."""
    from sophia_tasks.schemas.fields import GongCallId, IsoDateTime, StrictBoolean, StrictNumber

    cls = type(field)
    if cls is GongCallId:
        good = st.from_regex(CALL_ID_RE, fullmatch=True)
        bad = st.text(max_size=5) | st.integers() | st.from_regex(r"[0-9]{33,35}", fullmatch=True)
    elif cls is IsoDateTime:
        good, bad = ISO, NAIVE_ISO | st.text(max_size=12) | st.integers()
    elif cls is StrictNumber:
        low = field.min if field.min is not None else -10**6  # type: ignore[attr-defined]
        good = st.integers(int(math.ceil(low)), 10**6) | st.floats(low, 1e6)
        bad = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, -1) | st.booleans()
               | st.text(max_size=3))
    elif cls is StrictBoolean:
        good, bad = st.booleans(), st.integers(0, 1) | st.text(max_size=3)
    elif cls is fields.String:
        good, bad = st.text(max_size=10), st.integers() | st.lists(st.text(), max_size=1)
    elif cls is fields.Raw:
        good, bad = JSON, st.nothing()
    elif cls is fields.Dict:
        good, bad = st.dictionaries(st.text(max_size=4), JSON, max_size=2), st.lists(JSON, max_size=2) | st.text()
    elif cls is fields.List:
        inner = field.inner  # type: ignore[attr-defined]
        item = value_for(inner, depth, junk)
        good = st.lists(item | st.none() if junk or inner.allow_none else item, max_size=3)
        bad = st.dictionaries(st.text(max_size=3), JSON, max_size=1) | st.text(max_size=3)
    elif cls is fields.Nested:
        good = schema_values(field.schema, depth + 1, junk)  # type: ignore[attr-defined]
        bad = st.lists(JSON, max_size=2) | st.text(max_size=3)
    else:  # pragma: no cover - a new field class needs a strategy here
        raise AssertionError(f"no strategy for {cls.__name__}")
    if not junk:
        return good | st.none() if field.allow_none else good
    return st.one_of(good, good, good, st.none(), bad)


def schema_values(schema: Schema, depth: int = 0, junk: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    if depth > 3:
        return st.just({})
    entries = {(f.data_key or name): (f, value_for(f, depth, junk)) for name, f in schema.load_fields.items()}
    required = {k: v for k, (f, v) in entries.items() if f.required and not junk}
    optional = {k: v for k, (f, v) in entries.items() if k not in required}
    # Unknown keys ride along (the schema keeps them); never a known field's name, which would give
    # that field a value of any JSON type: with junk=False an invalid call (seen: {"name": []}).
    unknown = st.text(max_size=5).filter(lambda k: k not in entries)
    return st.fixed_dictionaries(required, optional=optional).flatmap(
        lambda d: st.dictionaries(unknown, JSON, max_size=1).map(lambda extra: {**extra, **d}))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schema_values(GongCallSchema()))
def test_fast_check_agrees_with_marshmallow_on_gong_shaped_values(call: dict[str, Any]) -> None:
    assert ACCEPTS is not None
    assert ACCEPTS(call) == marshmallow_accepts(call)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, prefix + (i,))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schema_values(GongCallSchema(), junk=False), st.data())
def test_valid_calls_and_single_mutations_of_them(call: dict[str, Any], data: st.DataObject) -> None:
    assert ACCEPTS is not None
    assert marshmallow_accepts(call) and ACCEPTS(call)
    where = paths(call)
    if not where:
        return
    path = data.draw(st.sampled_from(where))
    mutated = json.loads(json.dumps(call, allow_nan=True))
    node = mutated
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = data.draw(JSON)
    assert ACCEPTS(mutated) == marshmallow_accepts(mutated)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_fast_check_agrees_with_marshmallow_on_any_json(value: Any) -> None:
    assert ACCEPTS is not None
    assert ACCEPTS(value) == marshmallow_accepts(value)


def test_every_corpus_call_takes_the_fast_path() -> None:
    calls = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(calls) >= 200
    assert gong._ACCEPTS is not None
    assert all(gong._ACCEPTS(c) for c in calls)
    assert all(marshmallow_accepts(c) for c in calls)


def test_a_refused_call_still_gets_marshmallows_field_errors() -> None:
    body, errors = gong.validate_call({"metaData": {"id": "12", "duration": "long"}})
    assert body is None and errors == {"metaData": {"duration": ["Not a valid number."]}}


def test_non_json_containers_are_left_to_marshmallow() -> None:
    assert ACCEPTS is not None
    call = {"metaData": {"id": "12"}, "parties": ({"name": "a"},)}  # a tuple: marshmallow decides
    assert ACCEPTS(call) is False
    assert gong.validate_call(call) == (call, {})


def test_schemas_it_cannot_model_get_no_fast_path() -> None:
    class WithValidator(Schema):
        class Meta:
            unknown = INCLUDE

        name = fields.String(validate=validate.Length(max=3))

    class Strict(Schema):
        class Meta:
            unknown = RAISE

        name = fields.String()

    class WithEmail(Schema):
        class Meta:
            unknown = INCLUDE

        email = fields.Email()

    assert compile_schema(WithValidator()) is None
    assert compile_schema(Strict()) is None
    assert compile_schema(WithEmail()) is None
