"""JSON Schema (2020-12) validators for collections declared with a schema in the flow spec.

Why: a new source needs only a spec change, not a release with a marshmallow class. The checking is
the maintained ``jsonschema`` package (``Draft202012Validator``); this module only adapts it to the
pipeline's validator shape, ``validate(document) -> (document | None, errors)``, where ``errors`` maps
the JSON pointer of each failing value ("" for the document itself) to every message about it, so a
dead letter carries all the errors with their paths, as the marshmallow schemas' letters do.

``format`` is an annotation, as the 2020-12 default says (no format assertion): use ``pattern``
where a format must be enforced.

Fast path: ``jsonschema`` walks a schema in Python (~150-500 us for a 0.4 KB deal on this machine, ten
times the marshmallow fast path of a call; ``docs/benchmarks.md``). As with the marshmallow schemas, a
compiled accept-check answers first: ``jsonschema-rs`` (Rust, 2020-12, a few microseconds). Only a
document it does not accept goes through ``jsonschema``, which has the last word either way: its errors
are the dead letter's, and a document it finds no error in is accepted (the two regex engines differ at
the edges, e.g. Python's ``$`` also matches before a final newline). A property test holds the check to
``jsonschema``: what it accepts, ``jsonschema`` accepts. A schema the fast check cannot compile (a
remote ``$ref``) simply has no fast path.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
#: The errors kept per document: a wildly wrong document (a list of 10,000 bad items) still gets a
#: bounded dead letter; the count says how many there were.
MAX_ERRORS = 200

Validator = Callable[[Any], "tuple[dict | None, dict]"]


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def schema_problems(schema: Any) -> list[str]:
    """Every problem of ``schema`` as a 2020-12 JSON Schema, each with its path inside the schema."""
    if not isinstance(schema, (Mapping, bool)):
        return [f"must be a JSON Schema (an object), got {type(schema).__name__}"]
    if isinstance(schema, Mapping) and schema.get("$schema", DRAFT_2020_12).rstrip("#") != DRAFT_2020_12:
        return [f"$schema: only {DRAFT_2020_12} is supported, got {schema.get('$schema')!r}"]
    meta = validator_for(Draft202012Validator.META_SCHEMA, default=Draft202012Validator)
    problems = []
    for error in sorted(meta(Draft202012Validator.META_SCHEMA).iter_errors(schema), key=lambda e: list(e.path)):
        where = _pointer(error.absolute_path) or "(the schema itself)"
        problems.append(f"{where}: {error.message}")
    return problems


def compile_check(schema: Mapping[str, Any] | bool) -> Callable[[Any], bool] | None:
    """The fast accept-check of ``schema`` (``jsonschema-rs``, offline, formats as annotations), or None."""
    try:
        return jsonschema_rs.Draft202012Validator(schema, validate_formats=False, offline=True).is_valid
    except Exception:  # an unresolvable $ref, a regex Rust refuses: no fast path, the same answers
        return None


def compile_validator(schema: Mapping[str, Any] | bool, fast: bool = True) -> Validator:
    """A validator for a schema already checked with :func:`schema_problems` (``fast=False``: no accept-check)."""
    checker = Draft202012Validator(schema)
    iter_errors = checker.iter_errors
    accepts = compile_check(schema) if fast else None

    def validate(document: Any) -> tuple[dict | None, dict]:
        if accepts is not None:
            try:
                if accepts(document):
                    return document, {}
            except (ValueError, TypeError, OverflowError):  # not a JSON value it can read: ask jsonschema
                pass
        errors: dict[str, list[str]] = {}
        n = 0
        try:
            for error in iter_errors(document):
                n += 1
                if n > MAX_ERRORS:
                    continue
                errors.setdefault(_pointer(error.absolute_path), []).append(error.message)
        except Exception as exc:  # an unresolvable $ref, a pattern the regex engine refuses
            errors.setdefault("", []).append(f"the schema cannot be applied: {type(exc).__name__}: {exc}")
        if n > MAX_ERRORS:
            errors.setdefault("", []).append(f"{n - MAX_ERRORS} more error(s) not listed")
        if errors:
            return None, errors
        return document, {}

    return validate
