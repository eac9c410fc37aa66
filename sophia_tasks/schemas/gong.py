"""Marshmallow schema of one Gong call (an element of ``/v2/calls/extensive`` ``calls[]``).

Validation only: :func:`validate_call` hands back the call exactly as it came in, because
the pipeline materializes Gong's own JSON shape (converting ``started`` to a ``datetime`` or
``duration`` to a float would change the document). Unknown fields are kept everywhere
(``unknown = INCLUDE``): Gong adds fields without notice and we must not drop them.

What is checked is what downstream stages rely on: the call id (the collection key), the
timestamps (last-write-wins ordering), numeric metrics (projections, enrichment) and the
structure of lists of objects. Enumerations (``direction``, ``scope``, ``affiliation``...)
are plain strings on purpose: a new value from Gong must not dead-letter real calls.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields

CALL_ID_RE = re.compile(r"[0-9]{1,32}")


def _type_name(value: Any) -> str:
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
            raise self.make_error("invalid", type=_type_name(value))
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


def _str() -> fields.String:
    return fields.String(allow_none=True)


def _num(min: float | None = None) -> StrictNumber:
    return StrictNumber(min=min, allow_none=True)


def _list_of(schema: type[Schema]) -> fields.List:
    """An optional (nullable) list whose items must be objects of ``schema``."""
    return fields.List(fields.Nested(schema), allow_none=True)


def _raw_list() -> fields.List:
    return fields.List(fields.Raw(allow_none=True), allow_none=True)


def _obj_list() -> fields.List:
    return fields.List(fields.Dict(), allow_none=True)


class _Open(Schema):
    """Base: keep unknown fields (Gong adds some) at every level."""

    class Meta:
        unknown = INCLUDE


class MetaDataSchema(_Open):
    id = GongCallId(required=True)
    url = _str()
    title = _str()
    scheduled = IsoDateTime(allow_none=True)
    started = IsoDateTime(allow_none=True)
    duration = _num(min=0)
    primaryUserId = _str()
    direction = _str()
    system = _str()
    scope = _str()
    media = _str()
    language = _str()
    workspaceId = _str()
    sdrDisposition = _str()
    clientUniqueId = _str()
    customData = _str()
    purpose = _str()
    meetingUrl = _str()
    isPrivate = StrictBoolean(allow_none=True)
    calendarEventId = _str()


class ContextFieldSchema(_Open):
    name = _str()
    value = fields.Raw(allow_none=True)


class ContextObjectSchema(_Open):
    objectType = _str()
    objectId = fields.Raw(allow_none=True)
    # "fields" would shadow the marshmallow module name here; data_key keeps the JSON name.
    fields_ = fields.List(fields.Nested(ContextFieldSchema), allow_none=True, data_key="fields")
    timing = _str()


class ContextSchema(_Open):
    system = _str()
    objects = _list_of(ContextObjectSchema)


class PartySchema(_Open):
    id = _str()
    emailAddress = _str()
    name = _str()
    title = _str()
    userId = _str()
    speakerId = _str()
    context = _obj_list()
    affiliation = _str()
    phoneNumber = _str()
    methods = fields.List(fields.String(), allow_none=True)


class NamedDurationSchema(_Open):
    name = _str()
    duration = _num(min=0)


class TrackerOccurrenceSchema(_Open):
    startTime = _num(min=0)
    speakerId = _str()


class TrackerSchema(_Open):
    id = _str()
    name = _str()
    count = _num(min=0)
    type = _str()
    occurrences = _list_of(TrackerOccurrenceSchema)
    phrases = _raw_list()


class ActionItemSchema(_Open):
    snippetStartTime = _num(min=0)
    snippetEndTime = _num(min=0)
    speakerId = _str()
    snippet = _str()


class PointsOfInterestSchema(_Open):
    actionItems = _list_of(ActionItemSchema)


class CallOutcomeSchema(_Open):
    id = _str()
    category = _str()
    name = _str()


class KeyPointSchema(_Open):
    text = _str()


class ContentSchema(_Open):
    structure = _list_of(NamedDurationSchema)
    topics = _list_of(NamedDurationSchema)
    trackers = _list_of(TrackerSchema)
    pointsOfInterest = fields.Nested(PointsOfInterestSchema, allow_none=True)
    brief = _str()
    outline = _raw_list()
    highlights = _raw_list()
    callOutcome = fields.Nested(CallOutcomeSchema, allow_none=True)
    keyPoints = _list_of(KeyPointSchema)


class SpeakerSchema(_Open):
    id = _str()
    userId = _str()
    talkTime = _num(min=0)


class InteractionStatSchema(_Open):
    name = _str()
    value = _num()


class QuestionsSchema(_Open):
    companyCount = _num(min=0)
    nonCompanyCount = _num(min=0)


class InteractionSchema(_Open):
    speakers = _list_of(SpeakerSchema)
    interactionStats = _list_of(InteractionStatSchema)
    video = _raw_list()
    questions = fields.Nested(QuestionsSchema, allow_none=True)


class CollaborationSchema(_Open):
    publicComments = _obj_list()


class MediaSchema(_Open):
    audioUrl = _str()
    videoUrl = _str()


class GongCallSchema(_Open):
    """One Gong call; only ``metaData.id`` is required (other blocks depend on ``contentSelector``)."""

    metaData = fields.Nested(MetaDataSchema, required=True)
    context = _list_of(ContextSchema)
    parties = _list_of(PartySchema)
    content = fields.Nested(ContentSchema, allow_none=True)
    interaction = fields.Nested(InteractionSchema, allow_none=True)
    collaboration = fields.Nested(CollaborationSchema, allow_none=True)
    media = fields.Nested(MediaSchema, allow_none=True)


_SCHEMA = GongCallSchema()
_ACCEPTS: Any = None  # set below, once the module (which fast.py imports) is complete


def _compile_fast_path() -> None:
    global _ACCEPTS
    from sophia_tasks.schemas.fast import compile_schema

    _ACCEPTS = compile_schema(_SCHEMA)


def validate_call(call: Any) -> tuple[dict | None, dict]:
    """Check ``call`` against :class:`GongCallSchema` without changing it.

    Returns ``(call, {})`` when valid (the very same dict, shape untouched) or
    ``(None, errors)`` with marshmallow's nested field-error dict (list indexes as string
    keys, e.g. ``{"parties": {"1": {"name": [...]}}}``, so it serializes as JSON). Never
    raises: any JSON value (or junk) yields an error dict instead.
    """
    if not isinstance(call, dict):
        return None, {"_schema": [f"A Gong call must be a JSON object, got {_type_name(call)}."]}
    if _ACCEPTS is not None and _ACCEPTS(call):  # the compiled fast path; marshmallow for the rest
        return call, {}
    try:
        errors = _SCHEMA.validate(call)
    except ValidationError as exc:  # defensive: validate() normally returns the errors
        errors = exc.normalized_messages()
    except (RecursionError, TypeError, ValueError) as exc:
        return None, {"_schema": [f"Could not validate the call: {type(exc).__name__}."]}
    if errors:
        return None, _json_keys(errors)
    return call, {}


def _json_keys(errors: Any) -> Any:
    """marshmallow keys list-item errors by int index; make them strings so the dict is JSON
    (orjson refuses non-str keys, and the errors travel to the dead-letter store)."""
    if isinstance(errors, dict):
        return {str(key): _json_keys(value) for key, value in errors.items()}
    if isinstance(errors, list):
        return [_json_keys(item) for item in errors]
    return errors


_compile_fast_path()
