"""The strict field types the Gong schema and its compiled fast path both use."""
from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from marshmallow import fields

CALL_ID_RE = re.compile(r"[0-9]{1,32}")


def json_type_name(value: Any) -> str:
    """JSON-ish name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class GongCallId(fields.String):
    """Gong call ids are strings of digits; numbers lose precision in JSON, so refuse them."""

    default_error_messages = {
        "invalid": "Gong call id must be a string of 1-32 digits, got {type}.",
        "format": "Gong call id must be a string of 1-32 digits (0-9 only), got {value!r}.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid", type=json_type_name(value))
        if not CALL_ID_RE.fullmatch(value):
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise self.make_error("format", value=shown)
        return value


class IsoDateTime(fields.String):
    """An ISO-8601 datetime with a UTC offset, validated but kept as the original string."""

    default_error_messages = {
        "invalid": "Not a valid string.",
        "datetime": "Not a valid ISO-8601 datetime.",
        "offset": "ISO-8601 datetime must include a UTC offset (e.g. +00:00 or Z).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise self.make_error("datetime") from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise self.make_error("offset")
        return text


class StrictNumber(fields.Field):
    """A JSON number (int or float, finite); strings and booleans are refused, value unchanged."""

    default_error_messages = {
        "invalid": "Not a valid number.",
        "too_small": "Must be greater than or equal to {min}.",
    }

    def __init__(self, *, min: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min = min

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.make_error("invalid")
        if self.min is not None and value < self.min:
            raise self.make_error("too_small", min=self.min)
        return value


class StrictBoolean(fields.Field):
    """``true``/``false`` only: marshmallow's Boolean would also take "yes", 1, "on"..."""

    default_error_messages = {"invalid": "Not a valid boolean."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value
