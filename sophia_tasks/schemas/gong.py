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

from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields

from sophia_tasks.schemas.fast import compile_schema
from sophia_tasks.schemas.fields import GongCallId, IsoDateTime, StrictBoolean, StrictNumber, json_type_name


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
#: The compiled fast path (``sophia_tasks.schemas.fast``); marshmallow answers what it does not accept.
_ACCEPTS: Any = compile_schema(_SCHEMA)


def validate_call(call: Any) -> tuple[dict | None, dict]:
    """Check ``call`` against :class:`GongCallSchema` without changing it.

    Returns ``(call, {})`` when valid (the very same dict, shape untouched) or
    ``(None, errors)`` with marshmallow's nested field-error dict (list indexes as string
    keys, e.g. ``{"parties": {"1": {"name": [...]}}}``, so it serializes as JSON). Never
    raises: any JSON value (or junk) yields an error dict instead.
    """
    if not isinstance(call, dict):
        return None, {"_schema": [f"A Gong call must be a JSON object, got {json_type_name(call)}."]}
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

