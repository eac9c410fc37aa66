"""A compiled accept-check for marshmallow schemas: the fast path of validation.

Why: marshmallow's ``Schema.validate`` deserialises the whole call (every Nested and List
field through several Python layers) to throw the result away; measured here it was ~0.45 ms
per call, two thirds of the validate task. Almost every call is valid, so the pipeline asks
this check first and runs marshmallow only for a call it does not accept, to produce the
dead-letter's field errors.

The check is compiled once from the schema's own field declarations (nothing is declared
twice). It is *conservative*: it answers True only for values marshmallow accepts, and
False for anything it is unsure of (a bytes string, a tuple, a Mapping that is not a dict),
which then simply goes through marshmallow. A schema that uses something the compiler does
not know (a validator, a hook, another field class) gets no fast path at all:
:func:`compile_schema` returns None. A property test holds the check to marshmallow.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Any, Callable

from marshmallow import INCLUDE, Schema, fields

from sophia_tasks.schemas.fields import CALL_ID_RE, GongCallId, IsoDateTime, StrictBoolean, StrictNumber

Check = Callable[[Any], bool]
_MISSING = object()


class Unsupported(Exception):
    """The schema uses something this compiler does not model."""


def compile_schema(schema: Schema) -> Check | None:
    """An accept-check for ``schema``, or None when the schema cannot be modelled."""
    try:
        return _schema_check(schema)
    except Unsupported:
        return None


def _schema_check(schema: Schema) -> Check:
    if getattr(schema, "_hooks", None) and any(schema._hooks.values()):
        raise Unsupported("schema hooks")
    if schema.many or schema.only or schema.exclude or schema.partial:
        raise Unsupported("schema options")
    if schema.unknown != INCLUDE:  # RAISE would refuse unknown keys, EXCLUDE is not validation-only
        raise Unsupported("a schema that does not include unknown fields")
    entries: list[tuple[str, bool, bool, Check]] = []
    for name, field in schema.load_fields.items():
        key = field.data_key if field.data_key is not None else name
        entries.append((key, bool(field.required), bool(field.allow_none), _field_check(field)))
    get_missing = _MISSING

    def check(value: Any) -> bool:
        if type(value) is not dict:
            return False
        for key, required, allow_none, field_check in entries:
            v = value.get(key, get_missing)
            if v is get_missing:
                if required:
                    return False
                continue
            if v is None:
                if allow_none:
                    continue
                return False
            if not field_check(v):
                return False
        return True

    return check


def _field_check(field: fields.Field) -> Check:
    """A check for a non-None value of ``field``."""
    if field.validators:
        raise Unsupported(f"validators on {field!r}")
    # Local classes first: they subclass String / Field.
    cls = type(field)
    if cls is GongCallId:
        fullmatch = CALL_ID_RE.fullmatch
        return lambda v: type(v) is str and fullmatch(v) is not None
    if cls is IsoDateTime:
        return _iso_datetime
    if cls is StrictNumber:
        return _number_check(field.min)  # type: ignore[attr-defined]
    if cls is StrictBoolean:
        return lambda v: type(v) is bool
    if cls is fields.String:
        return lambda v: type(v) is str
    if cls is fields.Raw:
        return lambda v: True
    if cls is fields.Dict:
        if field.key_field is not None or field.value_field is not None:  # type: ignore[attr-defined]
            raise Unsupported("typed Dict")
        return lambda v: type(v) is dict
    if cls is fields.List:
        inner: fields.Field = field.inner  # type: ignore[attr-defined]
        item = _field_check(inner)
        item_allows_none = bool(inner.allow_none)

        def check_list(v: Any) -> bool:
            if type(v) is not list:
                return False
            for x in v:
                if x is None:
                    if not item_allows_none:
                        return False
                elif not item(x):
                    return False
            return True

        return check_list
    if cls is fields.Nested:
        if field.many or field.only or field.exclude or getattr(field, "partial", None):  # type: ignore[attr-defined]
            raise Unsupported("Nested options")
        if getattr(field, "unknown", None) not in (None, INCLUDE):
            raise Unsupported("Nested(unknown=...)")
        return _schema_check(field.schema)  # type: ignore[attr-defined]
    raise Unsupported(f"field class {cls.__name__}")


def _iso_datetime(v: Any) -> bool:
    if type(v) is not str:
        return False
    try:
        parsed = dt.datetime.fromisoformat(v)
    except ValueError:
        return False
    return parsed.tzinfo is not None and parsed.utcoffset() is not None


def _number_check(minimum: float | None) -> Check:
    isfinite = math.isfinite

    def check(v: Any) -> bool:
        cls = type(v)
        if cls is int:
            return minimum is None or v >= minimum
        if cls is float:
            return isfinite(v) and (minimum is None or v >= minimum)
        return False

    return check
