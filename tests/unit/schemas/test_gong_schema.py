"""GongCallSchema / validate_call: valid calls pass unchanged, every bad field is named."""
from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sophia_tasks.schemas import SCHEMAS, GongCallSchema, get_validator, validate_call

FULL_CALL: dict[str, Any] = {
    "metaData": {
        "id": "7782342274025937895",
        "url": "https://app.gong.io/call?id=7782342274025937895",
        "title": "Discovery call 🚀 with Acme — Ünïcødé",
        "scheduled": "2024-05-01T09:00:00-07:00",
        "started": "2024-05-01T09:01:12.345-07:00",
        "duration": 1834,
        "primaryUserId": "234599484848423",
        "direction": "Outbound",
        "system": "Zoom",
        "scope": "External",
        "media": "Video",
        "language": "eng",
        "workspaceId": "623457276584334",
        "sdrDisposition": None,
        "clientUniqueId": None,
        "customData": None,
        "purpose": None,
        "meetingUrl": "https://zoom.us/j/123",
        "isPrivate": False,
        "calendarEventId": None,
        "someFieldGongAddsLater": {"nested": [1, 2, 3]},
    },
    "context": [
        {
            "system": "Salesforce",
            "objects": [
                {
                    "objectType": "Opportunity",
                    "objectId": "0063x00000abcde",
                    "fields": [{"name": "Amount", "value": 12000}, {"name": "StageName", "value": "Won"}],
                    "timing": "Now",
                }
            ],
        }
    ],
    "parties": [
        {
            "id": "1",
            "emailAddress": "rep@example.com",
            "name": "Rep",
            "title": "AE",
            "userId": "234599484848423",
            "speakerId": "6432345678555530067",
            "context": [],
            "affiliation": "Internal",
            "methods": ["Invitee", "Attendee"],
        },
        {"id": "2", "name": "李小龍", "affiliation": "External", "speakerId": None, "emailAddress": None},
    ],
    "content": {
        "structure": [{"name": "Intro", "duration": 60}],
        "topics": [{"name": "Pricing", "duration": 120.5}],
        "trackers": [
            {
                "id": "t1",
                "name": "Competitors",
                "count": 2,
                "type": "KEYWORD",
                "occurrences": [{"startTime": 12.5, "speakerId": "6432345678555530067"}],
                "phrases": [{"count": 1, "phrase": "acme"}],
            }
        ],
        "pointsOfInterest": {
            "actionItems": [
                {"snippetStartTime": 10, "snippetEndTime": 20, "speakerId": "1", "snippet": "Send the deck"}
            ]
        },
        "brief": "x" * 20000,
        "outline": [{"section": "Intro", "items": []}],
        "highlights": [],
        "callOutcome": {"id": "1", "category": "Answered", "name": "Interested"},
        "keyPoints": [{"text": "Budget approved"}],
    },
    "interaction": {
        "speakers": [{"id": "s1", "userId": "234599484848423", "talkTime": 900.2}, {"id": "s2", "talkTime": 0}],
        "interactionStats": [{"name": "Talk Ratio", "value": 0.61}, {"name": "Patience", "value": -0.2}],
        "video": [{"name": "Browser", "duration": 10}],
        "questions": {"companyCount": 4, "nonCompanyCount": 2},
    },
    "collaboration": {"publicComments": [{"id": "c1", "comment": "nice"}]},
    "media": {"audioUrl": "https://signed/audio", "videoUrl": None},
    "topLevelUnknown": True,
}


def test_registry_maps_gong_call() -> None:
    assert SCHEMAS["gong_call"] is validate_call
    assert get_validator("gong_call") is validate_call


def test_unknown_schema_name_is_a_clear_key_error() -> None:
    with pytest.raises(KeyError, match="unknown schema 'nope'.*gong_call"):
        get_validator("nope")


def test_minimal_call_is_valid() -> None:
    call = {"metaData": {"id": "1"}}
    assert validate_call(call) == (call, {})


def test_full_call_is_valid_and_unchanged() -> None:
    call = copy.deepcopy(FULL_CALL)
    result, errors = validate_call(call)
    assert errors == {}
    assert result is call
    assert result == FULL_CALL  # ints stay ints, timestamps stay strings, unknown fields kept
    assert isinstance(result["metaData"]["duration"], int)
    assert result["metaData"]["started"] == "2024-05-01T09:01:12.345-07:00"


def test_nullable_blocks_are_accepted() -> None:
    call = {
        "metaData": {"id": "42", "started": None, "duration": None, "title": None},
        "context": None,
        "parties": None,
        "content": None,
        "interaction": None,
        "collaboration": None,
        "media": None,
    }
    assert validate_call(call) == (call, {})


def test_zero_length_call_and_z_offset() -> None:
    call = {"metaData": {"id": "9", "duration": 0, "started": "2024-05-01T00:00:00Z"}}
    assert validate_call(call)[1] == {}


@pytest.mark.parametrize(
    ("call_id", "fragment"),
    [
        (123, "got number"),
        (1.5, "got number"),
        (True, "got boolean"),
        (None, "may not be null"),
        ("", "1-32 digits"),
        ("12a", "1-32 digits"),
        ("-12", "1-32 digits"),
        (" 12", "1-32 digits"),
        ("٣٤", "1-32 digits"),  # Arabic-Indic digits: \d would accept them
        ("1" * 33, "1-32 digits"),
        (["1"], "got array"),
    ],
)
def test_bad_call_ids(call_id: Any, fragment: str) -> None:
    result, errors = validate_call({"metaData": {"id": call_id}})
    assert result is None
    assert list(errors) == ["metaData"]
    assert fragment in errors["metaData"]["id"][0]


def test_missing_metadata_and_id() -> None:
    assert validate_call({})[1] == {"metaData": ["Missing data for required field."]}
    assert validate_call({"metaData": {}})[1] == {"metaData": {"id": ["Missing data for required field."]}}
    assert "metaData" in validate_call({"metaData": None})[1]
    assert "metaData" in validate_call({"metaData": "1"})[1]


def test_every_bad_field_is_reported() -> None:
    call = {
        "metaData": {
            "id": 7,
            "started": "2024-05-01T09:00:00",  # no offset
            "scheduled": "yesterday",
            "duration": -1,
            "title": 5,
            "isPrivate": "yes",
        },
        "context": [{"objects": [{"fields": [{"name": 3}]}]}],
        "parties": [{"name": ["x"]}, None, "party"],
        "content": {
            "trackers": [{"count": "2", "occurrences": [{"startTime": -3}]}],
            "keyPoints": "not a list",
            "callOutcome": [],
        },
        "interaction": {
            "speakers": [{"talkTime": "900"}, {"talkTime": True}],
            "questions": {"companyCount": -1},
        },
        "collaboration": {"publicComments": [1]},
        "media": {"audioUrl": 1},
    }
    result, errors = validate_call(call)
    assert result is None
    meta = errors["metaData"]
    assert set(meta) == {"id", "started", "scheduled", "duration", "title", "isPrivate"}
    assert "UTC offset" in meta["started"][0]
    assert "ISO-8601" in meta["scheduled"][0]
    assert errors["context"]["0"]["objects"]["0"]["fields"]["0"]["name"] == ["Not a valid string."]
    assert set(errors["parties"]) == {"0", "1", "2"}
    assert errors["content"]["trackers"]["0"]["count"] == ["Not a valid number."]
    assert errors["content"]["trackers"]["0"]["occurrences"]["0"]["startTime"]
    assert errors["content"]["keyPoints"] == ["Not a valid list."]
    assert "callOutcome" in errors["content"]
    assert set(errors["interaction"]["speakers"]) == {"0", "1"}
    assert errors["interaction"]["questions"]["companyCount"]
    assert errors["collaboration"]["publicComments"]["0"]
    assert errors["media"]["audioUrl"] == ["Not a valid string."]
    orjson.dumps(errors)  # the error dict is JSON (it goes to the dead-letter store)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "12", None])
def test_duration_must_be_a_finite_number_or_null(value: Any) -> None:
    errors = validate_call({"metaData": {"id": "1", "duration": value}})[1]
    assert (errors == {}) == (value is None)


@pytest.mark.parametrize("value", ["str", 1, 1.5, None, [], [{"metaData": {"id": "1"}}], True])
def test_non_object_calls_are_errors_not_exceptions(value: Any) -> None:
    result, errors = validate_call(value)
    assert result is None
    assert "_schema" in errors


def test_schema_class_is_usable_directly() -> None:
    assert GongCallSchema().validate({"metaData": {"id": "1"}, "x": 1}) == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
call_keys = st.sampled_from(
    ["metaData", "parties", "content", "interaction", "context", "media", "collaboration", "id", "x"]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.dictionaries(call_keys, json_values, max_size=6)))
def test_validate_call_never_raises(value: Any) -> None:
    result, errors = validate_call(value)
    assert (result is None) == bool(errors)
    orjson.dumps(errors)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {"metaData": st.fixed_dictionaries({"id": st.from_regex(r"\A[0-9]{1,32}\Z")})},
        optional={"extra": json_values},
    )
)
def test_any_digit_id_with_unknown_fields_is_valid(call: dict) -> None:
    assert validate_call(call) == (call, {})
