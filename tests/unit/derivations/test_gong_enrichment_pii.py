"""PII masking: emails and phones out, look-alikes (timestamps, ids, amounts) untouched.

The corpus test derives every generated call and searches the serialized output for
every email and phone number the generator planted: none may survive.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sophia_tasks.derivations.gong_enrichment import derive
from sophia_tasks.derivations.gong_enrichment.config import resolve_config
from sophia_tasks.derivations.pii import (
    DEFAULT_MASKER,
    EMAIL_RE,
    PHONE_OR_DATE_RE,
    PiiMasker,
    mask_document,
    mask_text,
)
from tests.fixtures.gong_builders import NOW, quiet_call
from tests.fixtures.gong_generator import generate_calls_with_pii

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "gong_calls_corpus.ndjson"


# -- emails --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("jane.doe@acme.com", "***@acme.com"),
    ("Mail Jane.Doe+gong@Acme.co.uk, thanks.", "Mail ***@Acme.co.uk, thanks."),
    ("müller@firma.de und 王伟@例子.中国", "***@firma.de und ***@例子.中国"),
    ("(hanako.sato@sample.co.jp)", "(***@sample.co.jp)"),
    ("a@b.co", "***@b.co"),
    ("two: x@a.io;y@b.io", "two: ***@a.io;***@b.io"),
    ("https://user:pw@host.example.com/x", "https://user:***@host.example.com/x"),
])
def test_emails_keep_only_the_domain(text: str, expected: str) -> None:
    assert mask_text(text) == expected


@pytest.mark.parametrize("text", ["@acme", "follow @sophia on X", "no email here", "a@localhost", "user@", "@@@"])
def test_not_emails_are_untouched(text: str) -> None:
    assert mask_text(text) == text


# -- phones --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Call +1 415-555-0132 today", "Call ***-***-**32 today"),
    ("(415) 555-0198", "***-***-**98"),
    ("(415)555-0198", "***-***-**98"),
    ("415.555.0143", "***-***-**43"),
    ("fax 020 7946 0958.", "fax ***-***-**58."),
    ("+44 (0)20 7946 0958", "***-***-**58"),
    ("+33 6 12 34 56 78", "***-***-**78"),
    ("06-12-34-56-78", "***-***-**78"),
    ("+14155550132", "***-***-**32"),
    ("tel:+1-415-555-0132", "tel:***-***-**32"),
    ("phone:415-555-0132.", "phone:***-***-**32."),
    ("連絡先 +81 3-1234-5678。", "連絡先 ***-***-**78。"),
    ("On 2026-11-25 call 415-555-0132", "On 2026-11-25 call ***-***-**32"),
    ("555-0132", "***-***-**32"),
    ("+49\u00a030\u00a01234567", "***-***-**67"),
])
def test_phones_keep_the_last_two_digits(text: str, expected: str) -> None:
    assert mask_text(text) == expected


@pytest.mark.parametrize("text", [
    "7782342274025937895",  # a call id
    "id 7782342274025937895",
    "2026-11-25T18:21:00+01:00",
    "2026-11-25T18:21:00.123456-05:00",
    "2026-11-25 18:21",
    "25/11/2026 and 11/25/26",
    "2026.11.25",
    "10:30-11:30",
    "$40,000 in 2026",
    "1.234.567 EUR",
    "pi is 3.14159265",
    "192.168.0.1",
    "the 2025-2026 budget",
    "550e8400-e29b-41d4-a716-446655440000",
    "https://zoom.us/j/4155550132?pwd=abc",
    "duration 1834 s, 12 questions",
    "4155550132",  # no phone shape in free text (a field named phoneNumber is masked anyway)
])
def test_phone_look_alikes_are_untouched(text: str) -> None:
    assert mask_text(text) == text


@pytest.mark.parametrize("keep, expected", [(0, "***-***-****"), (1, "***-***-***2"), (2, "***-***-**32")])
def test_keep_last_digits_is_configurable(keep: int, expected: str) -> None:
    assert PiiMasker(keep_last_digits=keep).mask_text("+1 415-555-0132") == expected
    cfg = resolve_config({"pii_phone_keep_last_digits": keep})
    assert cfg.masker.mask_text("+1 415-555-0132") == expected


def test_masking_long_text_is_linear() -> None:
    import time

    text = ("word " * 20000) + "x" * 50000 + "@" + ("12-" * 20000)
    start = time.perf_counter()
    mask_text(text)
    assert time.perf_counter() - start < 2.0


# -- documents -----------------------------------------------------------------------------
def test_contact_fields_are_masked_whatever_their_shape() -> None:
    doc = {"parties": [{"emailAddress": "N/A", "phoneNumber": "4155550132", "name": "Jo"},
                       {"emailAddress": "jo@acme.com", "phoneNumber": 4155550177, "mobile": "call me"},
                       {"emailAddress": None, "phoneNumber": ""}],
           "context": [{"objects": [{"fields": [{"name": "Phone", "value": "4155550199"},
                                                {"name": "MobilePhone", "value": 4155550188},
                                                {"name": "Email", "value": "jo@acme.com"},
                                                {"name": "Industry", "value": "Retail 4155550111"}]}]}]}
    out = mask_document(doc)
    assert out["parties"][0] == {"emailAddress": "***", "phoneNumber": "***-***-**32", "name": "Jo"}
    assert out["parties"][1] == {"emailAddress": "***@acme.com", "phoneNumber": "***-***-**77", "mobile": "***"}
    assert out["parties"][2] == {"emailAddress": None, "phoneNumber": ""}
    fields = out["context"][0]["objects"][0]["fields"]
    assert [f["value"] for f in fields] == ["***-***-**99", "***-***-**88", "***@acme.com", "Retail 4155550111"]


def test_every_string_is_walked_but_meta_and_keys_are_not() -> None:
    doc = {"_meta": {"operator": "ops@sophia.dev", "phone": "+1 415 555 0100"},
           "metaData": {"id": "7782342274025937895", "title": "Call jo@acme.com 🚀",
                        "customData": {"note": ["+1 415 555 0101"]}},
           "content": {"outline": [{"section": "Intro", "items": [{"text": "ring 415-555-0102"}]}]},
           "collaboration": {"publicComments": [{"comment": "cc jo@acme.com"}]},
           "weird": [[["+1 415 555 0103"]], ("tuple", "+1 415 555 0104")],
           "media": {"audioUrl": "https://x/a.mp3?sig=1"}}
    out = mask_document(doc)
    assert out["_meta"] == doc["_meta"]
    assert out["metaData"] == {"id": "7782342274025937895", "title": "Call ***@acme.com 🚀",
                               "customData": {"note": ["***-***-**01"]}}
    assert out["content"]["outline"][0]["items"][0]["text"] == "ring ***-***-**02"
    assert out["collaboration"]["publicComments"][0]["comment"] == "cc ***@acme.com"
    assert out["weird"] == [[["***-***-**03"]], ["tuple", "***-***-**04"]]
    assert "media" not in out


def test_mask_document_does_not_mutate_and_is_idempotent() -> None:
    calls, _ = generate_calls_with_pii(40, seed=11)
    for call in calls:
        before = copy.deepcopy(call)
        once = mask_document(call)
        assert call == before
        assert mask_document(once) == once


# -- the generated corpus ------------------------------------------------------------------
def test_no_planted_email_or_phone_survives_in_the_corpus_output() -> None:
    calls, planted = generate_calls_with_pii(250, seed=7)
    assert len(planted.emails) > 100 and len(planted.phones) > 100
    out = derive(calls, None, NOW)
    dumped = json.dumps([{k: v for k, v in d.items() if k != "_meta"} for d in out], ensure_ascii=False)
    assert [e for e in planted.emails if e in dumped] == []
    assert [p for p in planted.phones if p in dumped] == []
    # and neither does the local part of an email, nor the digits of a phone, in any single string
    local_parts = {e.split("@")[0] + "@" for e in planted.emails}
    assert [lp for lp in local_parts if lp in dumped] == []
    strings: list[str] = []
    _collect_strings(out, strings)
    digit_runs = {re.sub(r"\D", "", s) for s in strings}
    for phone in planted.phones:
        digits = re.sub(r"\D", "", phone)
        assert not any(digits in run for run in digit_runs), phone


def test_every_email_left_in_the_corpus_output_is_masked() -> None:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    out = derive([json.loads(line) for line in lines], None, NOW)
    for doc in out:
        body = json.dumps({k: v for k, v in doc.items() if k != "_meta"}, ensure_ascii=False)
        for m in EMAIL_RE.finditer(body):
            assert m.group().startswith("***@"), m.group()


def test_timestamps_and_ids_survive_in_the_corpus_output() -> None:
    calls, _ = generate_calls_with_pii(250, seed=7)
    out = derive(calls, None, NOW)
    for call, doc in zip(calls, out, strict=True):
        md_in, md_out = call["metaData"], doc["metaData"]
        for key in ("id", "started", "scheduled", "duration", "workspaceId", "primaryUserId", "url", "meetingUrl"):
            assert md_out.get(key) == md_in.get(key), key
        for p_in, p_out in zip(call.get("parties") or [], doc.get("parties") or [], strict=True):
            assert (p_in["id"], p_in.get("userId"), p_in["name"]) == (p_out["id"], p_out.get("userId"), p_out["name"])


def _collect_strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _collect_strings(v, out)


# -- the fast code equals the plain-regex definition ---------------------------------------
_PHONEISH = st.text(alphabet="0123456789 ()+-./:@T Z_ab*,\u00a0\u2013é", max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_PHONEISH, st.text(max_size=40)))
def test_mask_text_equals_the_regex_definition(text: str) -> None:
    assert DEFAULT_MASKER.mask_text(text) == DEFAULT_MASKER.mask_text_reference(text)


@settings(max_examples=300, deadline=None)
@given(_PHONEISH)
def test_mask_text_is_idempotent(text: str) -> None:
    once = mask_text(text)
    assert mask_text(once) == once


def _reference_walk(value: Any, masker: PiiMasker) -> Any:
    """The walk's contract spelled out naively: every string through the reference regexes,
    contact fields (by key, or CRM name/value pairs) masked whole."""
    contact = masker.email_fields | masker.phone_fields

    def field(name: str, v: Any) -> Any:
        return masker.mask_phone_value(v) if name in masker.phone_fields else masker.mask_email_value(v)

    if isinstance(value, str):
        return masker.mask_text_reference(value)
    if isinstance(value, list):
        return [_reference_walk(v, masker) for v in value]
    if isinstance(value, dict):
        out = {k: (field(k, v) if k in contact and not isinstance(v, (dict, list)) else _reference_walk(v, masker))
               for k, v in value.items()}
        name = value.get("name")
        if (isinstance(name, str) and name in contact and "value" in value
                and not isinstance(value["value"], (dict, list))):
            out["value"] = field(name, value["value"])
        return out
    return value


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | _PHONEISH | st.text(max_size=20)
    | st.sampled_from(["Phone", "Email", "jane@acme.com", "+1 415-555-0132", "2026-11-25T18:21:00Z"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["name", "value", "phoneNumber", "emailAddress", "text", "id", "x"]),
                      children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["metaData", "parties", "content", "context", "phone", "x"]), _JSONISH,
                       max_size=5))
def test_walk_equals_the_naive_definition(doc: dict[str, Any]) -> None:
    assert DEFAULT_MASKER.mask_document(doc) == _reference_walk(doc, DEFAULT_MASKER)


def test_phone_regex_is_the_documented_one() -> None:
    # the fast path's shortcuts rely on these properties of the pattern
    assert PHONE_OR_DATE_RE.groupindex.keys() == {"keep", "phone"}
    assert quiet_call()["metaData"]["started"] == mask_text(quiet_call()["metaData"]["started"])


def test_phoneish_lead_bytes_cover_every_character_a_phone_can_hold() -> None:
    # may_hold_phone() is only exact if every non-ASCII character the phone pattern accepts
    # (\d digits of any script, no-break space, U+2010-2015 dashes) starts with a listed byte
    import sys

    from sophia_tasks.derivations.pii import PHONEISH_LEAD_BYTES

    digit = re.compile(r"\d")
    needed = set()
    for cp in range(0x80, sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        if digit.match(ch) or ch == "\u00a0" or 0x2010 <= cp <= 0x2015:
            needed.add(ch.encode()[0])
    assert needed <= PHONEISH_LEAD_BYTES


@pytest.mark.parametrize("text", ["+1 415-555-0132", "０９０-１２３４-５６７８", "٠٥٠١٢٣٤٥٦٧",
                                  "+49\u00a030\u00a01234567", "415\u2013555\u20130132", "x 555-0132"])
def test_may_hold_phone_never_misses(text: str) -> None:
    from sophia_tasks.derivations.pii import may_hold_phone

    assert may_hold_phone(text)


def test_may_hold_phone_rejects_prose_and_handles_surrogates() -> None:
    from sophia_tasks.derivations.pii import may_hold_phone

    assert not may_hold_phone("Budget of $40,000 was approved for 2026; about 200 more seats.")
    assert not may_hold_phone("lone surrogate \ud800 here")
    assert mask_text("lone surrogate \ud800 and +1 415-555-0132") == "lone surrogate \ud800 and ***-***-**32"
