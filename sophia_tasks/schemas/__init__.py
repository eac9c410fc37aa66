"""Named validators for collections: the flow spec refers to a schema by its key here."""
from __future__ import annotations

from typing import Any, Callable

from sophia_tasks.schemas.gong import GongCallSchema, validate_call

Validator = Callable[[Any], "tuple[dict | None, dict]"]

SCHEMAS: dict[str, Validator] = {
    "gong_call": validate_call,
}


def get_validator(name: str) -> Validator:
    """The validator registered as ``name``; KeyError naming the known ones otherwise."""
    try:
        return SCHEMAS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(SCHEMAS))
        raise KeyError(f"unknown schema {name!r}; known schemas: {known}") from None


__all__ = ["GongCallSchema", "SCHEMAS", "Validator", "get_validator", "validate_call"]
