"""The derivation's fast paths hold to their plain definitions.

Each shortcut taken for throughput (see "Performance" in ``docs/enrichment.md``) is
compared here with the straightforward code it replaced, kept in this file as the
reference: the keyword scanner's lookahead, the senior-title trie, whitespace
cleaning, the text index, the action order, and the masking walk's screens.
"""
from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sophia_tasks.derivations.gong_enrichment import derive
from sophia_tasks.derivations.gong_enrichment.config import resolve_config
from sophia_tasks.derivations.gong_enrichment.defaults import _CODE_ORDER, DEFAULT_CONFIG, OPPORTUNITY_CODES, RISK_CODES
from sophia_tasks.derivations.gong_enrichment.patterns import (
    _LEAD,
    _compile_keywords,
    _edge,
    _scan_regex,
    _split_keyword,
    _trie_regex,
)
from sophia_tasks.derivations.gong_enrichment.rules import _ACTIONS, _next_best_actions
from sophia_tasks.derivations.gong_enrichment.text import _SEGMENT_SEP, _Text
from sophia_tasks.derivations.gong_enrichment.values import _add_strings, _clean, truncate
from sophia_tasks.derivations.pii import _DIGITS, DEFAULT_MASKER, EMAIL_RE, PiiMasker, mask_document
from tests.fixtures.gong_builders import NOW, quiet_call

_SETTINGS = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Text built from keyword fragments, so that matches (and near misses) are common.
_FRAGMENTS = [
    "next step", "next  steps", "follow-up", "follow up", "we'll send", "we\u2019ll send", "too expensive",
    "over budget", "budget", "budgets", "Clari", "clari's", "Chorus.ai", "chorus", "otter.ai", "go-live", "q3",
    "end of the quarter", "by the end of", "champion", "champions", "discount", "CEO", "VP", "Vice President",
    "Head of", "Product Owner", "Assistant", "\u212aickoff", "\u0130nternal advocate", "社長", "部長", "总监",
    "Geschäftsführer", "directora", "x", "_", "-", ".", ",", "'", "\u2019", " ", "  ", "\t", "\n", "\u00a0", "\u2003",
    "\x00", "7", "2026", "é", "Ж", "🚀", "ΣΑΣ", "を検討", "abc", "Ab_9",
]
_TEXT = st.one_of(
    st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join),
    st.text(max_size=30),
)
_KEYWORD = st.one_of(
    st.sampled_from(["next step*", "Clari", "chorus.ai", "we'll send", "go-live", "q3", "Σας", "社長", "directora",
                     "Head of", "VP", "\u212aelvin", "é*", "x", "_id", "over  budget", "can't afford"]),
    st.text(alphabet="abcxyzé'\u2019 -.*Σ社", min_size=1, max_size=8).filter(lambda k: k.strip(" *")),
)


# -- the keyword scanner ----------------------------------------------------------------------
def _scan_regex_reference(keywords: list[str], flags: int = 0, as_written: bool = False) -> re.Pattern[str] | None:
    """The scanner before the first-letter lookahead: lead class, then the trie."""
    groups: dict[str, list[str]] = {"ascii": [], "word": [], "none": []}
    for k in keywords:
        kw, _ = _split_keyword(k)
        if kw:
            groups[_edge(kw[0])].append(k)
    parts = [f"{_LEAD[edge]}({_trie_regex(kws, as_written)})" for edge, kws in groups.items() if kws]
    return re.compile("|".join(parts), flags) if parts else None


def _matches(pattern: re.Pattern[str] | None, text: str) -> list[tuple[Any, ...]]:
    if pattern is None:
        return []
    return [(m.span(), m.groups(), [m.span(i) for i in range(1, pattern.groups + 1)]) for m in pattern.finditer(text)]


@_SETTINGS
@given(_TEXT, st.one_of(st.just(None), st.lists(_KEYWORD, min_size=1, max_size=6)))
def test_scanner_lookahead_changes_no_match(text: str, keywords: list[str] | None) -> None:
    kws = list(resolve_config({}).scan_keywords) if keywords is None else keywords
    low = " " + text.lower()
    assert _matches(_scan_regex(kws), low) == _matches(_scan_regex_reference(kws), low)
    raw = " " + text
    for as_written in (False, True):
        fast = _scan_regex(kws, re.IGNORECASE, as_written=as_written)
        assert _matches(fast, raw) == _matches(_scan_regex_reference(kws, re.IGNORECASE, as_written=as_written), raw)


# -- senior titles ------------------------------------------------------------------------------
@_SETTINGS
@given(_TEXT, st.one_of(st.just(None), st.lists(_KEYWORD, min_size=1, max_size=6)))
def test_senior_title_trie_finds_what_the_flat_pattern_finds(title: str, keywords: list[str] | None) -> None:
    kws = list(DEFAULT_CONFIG["senior_title_keywords"]) if keywords is None else keywords
    flat = _compile_keywords(kws)
    trie = _scan_regex(kws, re.IGNORECASE, as_written=True)
    assert (flat is None) == (trie is None)
    if flat is not None and trie is not None:
        assert (trie.search(" " + title) is not None) == (flat.search(title) is not None)


@pytest.mark.parametrize("keywords, title", [
    (["é*", "é"], "énext step"), (["VP", "VP*"], "VPs"), (["vp*", "VP"], "vPs"), (["Head", "Head of"], "head"),
])
def test_senior_title_trie_keeps_every_ending(keywords: list[str], title: str) -> None:
    # two keywords that differ only by a trailing * share a trie node: both endings must stay
    flat = _compile_keywords(keywords)
    trie = _scan_regex(keywords, re.IGNORECASE, as_written=True)
    assert flat is not None and trie is not None
    assert flat.search(title) is not None
    assert trie.search(" " + title) is not None


@pytest.mark.parametrize("title, senior", [
    ("VP of Sales", True), ("vp", True), ("Chief Revenue Officer", True), ("営業部長", True), ("Founder & CEO", True),
    ("Sales Manager", False), ("Engineer", False), ("VPN admin", False), ("Executive Assistant to the CEO", False),
    ("Product Owner", False), ("Owner", True), ("Directora de ventas", True), ("ceo", True), ("CEOs", False),
])
def test_senior_titles_default_keywords(title: str, senior: bool) -> None:
    call = quiet_call()
    call["metaData"]["scope"] = "External"
    call["parties"] = [{"id": "e1", "affiliation": "External", "title": title, "name": "Buyer"}]
    codes = [r["code"] for r in derive([call], None, NOW)[0]["enrichment"]["risk_indicators"]]
    assert ("no_decision_maker" not in codes) == senior


# -- whitespace cleaning ------------------------------------------------------------------------
def test_every_whitespace_but_the_space_is_unprintable() -> None:
    # _clean returns a long printable text without double or edge spaces unchanged: exact only
    # because str.split() splits on no printable character but the space
    assert [hex(c) for c in range(sys.maxunicode + 1)
            if chr(c).isspace() and c != 0x20 and chr(c).isprintable()] == []


@_SETTINGS
@given(st.one_of(_TEXT, st.text(max_size=120), st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join)))
def test_clean_equals_split_and_join(text: str) -> None:
    assert _clean(text) == " ".join(text.split())


# -- the text index -----------------------------------------------------------------------------
def _add_strings_reference(value: Any, label: str, out: list[tuple[str, str]], depth: int = 0) -> None:
    if type(value) is str:
        if value:
            out.append((label, value))
        return
    if depth >= 8:
        return
    if type(value) is dict:
        value = value.values()
    elif type(value) is not list:
        return
    for v in value:
        if type(v) is str:
            if v:
                out.append((label, v))
        elif type(v) is dict or type(v) is list:
            _add_strings_reference(v, label, out, depth + 1)


_JSON = st.recursive(
    st.one_of(st.none(), st.integers(), st.sampled_from(["", "a", "b", "budget", "next step"]), st.text(max_size=5)),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["t", "u", "items"]), c, max_size=3),
    max_leaves=30,
)


def _deep(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [{"items": value}]
    return value


@_SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["highlights", "outline"]),
                          st.one_of(_JSON, _JSON.map(lambda v: _deep(v, 4)))), max_size=3))
def test_text_index_equals_its_definition(blocks: list[tuple[str, Any]]) -> None:
    segments: list[tuple[str, str]] = []
    index: dict[str, str] = {}
    for label, value in blocks:
        _add_strings_reference(value, label, segments)
        _add_strings(value, label, index.setdefault)
    # reference: first occurrence of each text, joined with the separator, starts counted
    firsts: list[tuple[str, str]] = []
    seen: set[str] = set()
    for label, text in segments:
        if text not in seen:
            seen.add(text)
            firsts.append((label, text))
    text_index = _Text(index)
    assert text_index.labels == [label for label, _ in firsts]
    # one separator before each text: the scanner needs a character before a keyword
    assert text_index.blob == "".join(_SEGMENT_SEP + text for _, text in firsts)
    starts, pos = [], 1
    for _, text in firsts:
        starts.append(pos)
        pos += len(text) + 1
    assert text_index.starts == starts
    for start, (_, text) in zip(starts, firsts, strict=True):
        assert text_index.blob[start:start + len(text)] == text


# -- next best actions and top risks ------------------------------------------------------------
@_SETTINGS
@given(st.lists(st.sampled_from(RISK_CODES), unique=True), st.lists(st.sampled_from(OPPORTUNITY_CODES), unique=True))
def test_action_and_top_risk_order_equal_their_definitions(risk_codes: list[str], opp_codes: list[str]) -> None:
    risks = [(c, f"why {c}") for c in RISK_CODES if c in risk_codes]
    opportunities = [(c, f"why {c}") for c in OPPORTUNITY_CODES if c in opp_codes]
    found = [(c, e, 0) for c, e in risks]
    if "negative_outcome" not in risk_codes:
        found += [(c, e, 1) for c, e in opportunities]
    found.sort(key=lambda f: (_ACTIONS[f[0]][0], f[2], _CODE_ORDER[f[0]]))
    expected = [{"action": _ACTIONS[c][1], "reason": truncate(f"{c}: {e}", 240), "priority": _ACTIONS[c][0]}
                for c, e, _ in found]
    assert _next_best_actions(risks, opportunities) == expected

    cfg = resolve_config({"severity_weights": {"low": 15, "medium": 15, "high": 5}})
    top = sorted(risk_codes, key=lambda c: (-cfg.weight[c], _CODE_ORDER[c]))
    assert sorted(risk_codes, key=cfg.risk_order.__getitem__) == top


# -- the masking walk's screens -------------------------------------------------------------------
@_SETTINGS
@given(st.text(alphabet=st.characters(categories=["Lu", "Ll", "Lo", "Nd", "Nl", "No"]), max_size=30))
def test_letters_and_digits_only_mask_to_themselves(text: str) -> None:
    # the walk skips str.isalnum() strings: neither an email nor a phone fits in one
    if text.isalnum():
        assert DEFAULT_MASKER.mask_text_reference(text) == text


_URLISH = st.lists(st.sampled_from(["https://app.gong.io/call?id=", "7018159083016613186", "+1 415-555-0132", "/j/",
                                    "2186252760", " ", "-", ".", "(", ")", "x", "2026-01-05T17:37:00+00:00", "@",
                                    "a.b@c.io", "555", "٠٥٠١٢٣٤٥٦٧", "🚀", "\u00a0", "\u2013", "\ud800", "ناقشنا"]),
                   max_size=8).map("".join)


@_SETTINGS
@given(st.dictionaries(st.sampled_from(["url", "title", "value", "name", "phone", "email", "items"]),
                       st.one_of(_URLISH, st.none(), st.integers(), st.lists(_URLISH, max_size=3),
                                 st.sampled_from(["Phone", "Email", "x"])), max_size=5))
def test_walk_screens_equal_the_regex_definition(doc: dict[str, Any]) -> None:
    masker = DEFAULT_MASKER
    contact = masker.email_fields | masker.phone_fields

    def field(name: str, v: Any) -> Any:
        return masker.mask_phone_value(v) if name in masker.phone_fields else masker.mask_email_value(v)

    def ref(value: Any) -> Any:
        if isinstance(value, str):
            return masker.mask_text_reference(value)
        if isinstance(value, list):
            return [ref(v) for v in value]
        if isinstance(value, dict):
            out = {k: (field(k, v) if k in contact and not isinstance(v, (dict, list)) else ref(v))
                   for k, v in value.items()}
            name = value.get("name")
            if isinstance(name, str) and name in contact and "value" in value \
                    and not isinstance(value["value"], (dict, list)):
                out["value"] = field(name, value["value"])
            return out
        return value

    assert masker.mask_document(doc) == ref(doc)


@_SETTINGS
@given(st.one_of(st.none(), st.integers(), st.booleans(), _URLISH, st.text(max_size=20)))
def test_contact_values_equal_their_definitions(value: Any) -> None:
    masker = PiiMasker(keep_last_digits=1)
    text = value if isinstance(value, str) else str(value)
    if value is None or value == "" or isinstance(value, bool):
        expected_phone = value
    else:
        expected_phone = masker.phone_token(text) if _DIGITS.search(text) else "***"
    assert masker.mask_phone_value(value) == expected_phone
    if value is None or value == "":
        expected_email = value
    else:
        at = text.rfind("@")
        domain = text[at + 1:].strip() if at >= 0 else ""
        expected_email = "***@" + domain if domain and EMAIL_RE.fullmatch("x@" + domain) else "***"
    assert masker.mask_email_value(value) == expected_email


@pytest.mark.parametrize("keys", [
    ["metaData", "media", "_meta"], ["_meta", "metaData", "media"], ["metaData", "_meta", "parties"], ["_meta"],
])
def test_meta_keeps_its_place_and_media_is_dropped(keys: list[str]) -> None:
    values = {"metaData": {"id": "1"}, "media": {"audioUrl": "https://x/1"}, "_meta": {"event_id": "e+1 415-555-0132"},
              "parties": [{"phoneNumber": "+1 415-555-0132"}]}
    doc = {k: values[k] for k in keys}
    out = mask_document(doc)
    assert list(out) == [k for k in keys if k != "media"]
    assert out.get("_meta") == doc.get("_meta")
    assert out["_meta"] is not doc["_meta"]


# -- phone matching without extra regex calls ----------------------------------------------------
_PHONE_TEXT = st.one_of(
    st.text(alphabet="0123456789 ()+-./:T Z_ab\u00a0\u2010\u2013\u2015٠٥ناé🚀社", max_size=40),
    st.lists(st.sampled_from(["+1 415-555-0132", "(415) 555-0198", "415.555.0143", "2025-2026", "1.234.567",
                              "10.0.0.1", "2026-11-25", "+44 (0)20 7946 0958", " ", "x", "-", "7018159083016613186"]),
             max_size=6).map("".join),
)


@_SETTINGS
@given(_PHONE_TEXT)
def test_phone_groups_and_separators_equal_their_regexes(text: str) -> None:
    from sophia_tasks.derivations import pii

    for m in pii.PHONE_OR_DATE_RE.finditer(text):
        if m.lastgroup != "phone":
            continue
        candidate = m.group()
        assert candidate.translate(pii._PHONE_TO_SPACES).split() == pii._DIGITS.findall(candidate)
        assert set(candidate) & pii._PHONE_SEPARATORS == set(pii._NOT_SEPARATOR.sub("", candidate))


@_SETTINGS
@given(_PHONE_TEXT, st.integers(0, 45))
def test_run_search_guided_by_bytes_equals_the_regex(text: str, pos: int) -> None:
    from sophia_tasks.derivations import pii

    match = pii._RUN.search(text, pos)
    expected = None if match is None else match.span()
    assert pii._next_run(text, pos, None, None) == expected
    encoded = text.encode()
    assert pii._next_run(text, pos, encoded, encoded.translate(pii._PHONEISH_BYTES)) == expected


@_SETTINGS
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=30))
def test_ascii_digits_by_translate_equal_the_regex(text: str) -> None:
    from sophia_tasks.derivations import pii

    assert text.translate(pii._ASCII_NON_DIGITS) == "".join(pii._DIGITS.findall(text))


_ISOISH = st.lists(st.sampled_from(["2026", "-", "01", "05", "T", " ", "17", ":", "37", "00", "+", "Z", ".", ",", "000",
                                    "٠٥", "\x00", "d", "7", "1234567"]), max_size=12).map("".join)


@_SETTINGS
@given(_ISOISH)
def test_iso_shapes_are_iso_timestamps(text: str) -> None:
    from sophia_tasks.derivations import pii

    if text.encode().translate(pii._ISO_SHAPE_BYTES) in pii._ISO_SHAPES:
        assert pii._ISO_DATETIME.fullmatch(text) is not None
    assert DEFAULT_MASKER.mask_document({"t": text}) == {"t": DEFAULT_MASKER.mask_text_reference(text)}
