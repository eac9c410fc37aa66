"""Property test: for arbitrary calls in the Gong shape (optional blocks, nulls, random
unicode, wrong types where real exports have surprised us), ``derive`` never raises,
scores stay in 0..100, and the output is a masked, JSON-safe copy."""
from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sophia_tasks.derivations.gong_enrichment import derive
from sophia_tasks.derivations.gong_enrichment.defaults import OPPORTUNITY_CODES, RISK_CODES
from tests.fixtures.gong_builders import NOW

# Text that sometimes carries what the rules and the masking look for.
_SEEDED = st.sampled_from([
    "Clari", "too expensive", "next step", "more seats", "budget", "go-live", "champion", "VP Sales", "CEO",
    "Product Owner", "jane.doe@acme.com", "+1 415-555-0132", "(415) 555-0198", "2026-11-25T18:21:00+01:00",
    "7782342274025937895", "Lost", "Won", "Internal", "External", "🚀", "営業部長", "مدير", "", " ",
])
TEXT = st.one_of(st.text(max_size=40), _SEEDED, st.lists(_SEEDED, max_size=4).map(" ".join))
NUM = st.one_of(st.none(), st.integers(-10, 10**6), st.floats(-1e6, 1e6, allow_nan=False),
                st.sampled_from(["12", "abc", "", "1e400", "-3"]), st.booleans())
ODD = st.one_of(st.none(), st.integers(), TEXT, st.booleans(), st.just([]), st.just({}))


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, null, or (rarely) something of the wrong type."""
    return st.one_of(strategy, st.none(), ODD)


def block(required: dict[str, Any] | None = None, **optional: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(required or {}, optional=optional)


ID = st.one_of(st.sampled_from(["s1", "s2", "s3", "u1", "u2"]), TEXT, st.integers(0, 5))
PARTY = block(id=maybe(ID), emailAddress=maybe(TEXT), name=maybe(TEXT), title=maybe(TEXT), userId=maybe(ID),
              speakerId=maybe(ID), affiliation=maybe(st.sampled_from(["Internal", "External", "Unknown", "external"])),
              phoneNumber=maybe(st.one_of(TEXT, st.integers())), methods=maybe(st.lists(TEXT, max_size=2)),
              context=maybe(st.lists(ODD, max_size=2)))
TRACKER = block(id=maybe(TEXT), name=maybe(st.one_of(TEXT, st.sampled_from(["Competitors", "Pricing Objection",
                                                                              "Next Steps", "Champion"]))),
                count=NUM, type=maybe(TEXT),
                occurrences=maybe(st.lists(block(startTime=NUM, speakerId=maybe(ID)), max_size=3)),
                phrases=maybe(st.lists(st.one_of(TEXT, block(phrase=maybe(TEXT), count=NUM)), max_size=3)))
JSONISH = st.recursive(st.one_of(st.none(), TEXT, st.integers(), st.booleans()),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=8)
CONTENT = block(
    brief=maybe(TEXT),
    keyPoints=maybe(st.lists(st.one_of(block(text=maybe(TEXT)), TEXT, st.none()), max_size=4)),
    highlights=maybe(JSONISH), outline=maybe(JSONISH),
    trackers=maybe(st.lists(st.one_of(TRACKER, st.none()), max_size=4)),
    topics=maybe(st.lists(block(name=maybe(TEXT), duration=NUM), max_size=3)),
    structure=maybe(st.lists(block(name=maybe(TEXT), duration=NUM), max_size=3)),
    pointsOfInterest=maybe(block(actionItems=maybe(st.lists(
        st.one_of(block(snippet=maybe(TEXT), speakerId=maybe(ID), snippetStartTime=NUM), st.none()), max_size=3)))),
    callOutcome=maybe(block(id=maybe(TEXT), category=maybe(st.one_of(TEXT, st.sampled_from(["Lost", "Disqualified"]))),
                            name=maybe(TEXT))),
)
STAT_NAMES = st.sampled_from(["Talk Ratio", "Longest Monologue", "Longest Customer Story", "Interactivity", "Patience"])
INTERACTION = block(
    speakers=maybe(st.lists(block(id=maybe(ID), userId=maybe(ID), talkTime=NUM), max_size=4)),
    interactionStats=maybe(st.lists(block(name=maybe(st.one_of(STAT_NAMES, TEXT)), value=NUM), max_size=5)),
    questions=maybe(block(companyCount=NUM, nonCompanyCount=NUM)),
    video=maybe(st.lists(ODD, max_size=2)),
)
METADATA = block(
    id=maybe(st.one_of(st.from_regex(r"[0-9]{1,19}", fullmatch=True), TEXT)), url=maybe(TEXT), title=maybe(TEXT),
    scheduled=maybe(TEXT), started=maybe(TEXT), duration=NUM, primaryUserId=maybe(ID),
    direction=maybe(st.sampled_from(["Inbound", "Outbound", "Conference", "Unknown"])),
    scope=maybe(st.sampled_from(["Internal", "External", "Unknown"])), media=maybe(TEXT), language=maybe(TEXT),
    customData=maybe(st.one_of(TEXT, JSONISH)), isPrivate=maybe(st.booleans()),
)
CALL = st.fixed_dictionaries(
    {"metaData": st.one_of(METADATA, st.none())},
    optional={
        "_meta": st.dictionaries(st.sampled_from(["event_id", "published_at", "note"]), TEXT, max_size=3),
        "context": maybe(st.lists(block(system=maybe(TEXT), objects=maybe(st.lists(block(
            objectType=maybe(TEXT), objectId=maybe(TEXT),
            fields=maybe(st.lists(block(name=maybe(st.one_of(TEXT, st.sampled_from(["Phone", "Email", "CloseDate"]))),
                                        value=maybe(JSONISH)), max_size=3))), max_size=2))), max_size=2)),
        "parties": maybe(st.lists(st.one_of(PARTY, st.none()), max_size=5)),
        "content": maybe(CONTENT),
        "interaction": maybe(INTERACTION),
        "collaboration": maybe(block(publicComments=maybe(st.lists(
            st.one_of(block(id=maybe(TEXT), comment=maybe(TEXT)), TEXT), max_size=3)))),
        "media": maybe(block(audioUrl=maybe(TEXT), videoUrl=maybe(TEXT))),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(CALL, min_size=1, max_size=3), st.sampled_from([None, {}, {"short_call_seconds": 0,
                                                                          "competitors": ["Acme"]}]))
def test_derive_never_raises_and_stays_in_bounds(calls: list[dict[str, Any]], config: dict[str, Any] | None) -> None:
    before = copy.deepcopy(calls)
    out = derive(calls, config, NOW)

    assert calls == before  # input never mutated
    assert len(out) == len(calls)
    for call, doc in zip(calls, out, strict=True):
        e = doc["enrichment"]
        assert type(e["risk_score"]) is int and 0 <= e["risk_score"] <= 100
        codes = [r["code"] for r in e["risk_indicators"]]
        assert set(codes) <= set(RISK_CODES) and len(codes) == len(set(codes))
        assert all(r["severity"] in ("low", "medium", "high") and isinstance(r["evidence"], str)
                   for r in e["risk_indicators"])
        assert {o["code"] for o in e["opportunities"]} <= set(OPPORTUNITY_CODES)
        assert 0 < len(e["executive_summary"]) <= 600
        assert [a["priority"] for a in e["next_best_actions"]] == sorted(a["priority"] for a in e["next_best_actions"])
        assert "media" not in doc
        assert doc.get("_meta") == call.get("_meta")
        json.dumps(doc, allow_nan=False)  # JSON-safe
        assert derive([call], config, NOW)[0] == doc  # deterministic
