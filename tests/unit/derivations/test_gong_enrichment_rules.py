"""Each enrichment rule on its own: it fires, it does not fire, its block is missing.

Every test starts from ``quiet_call()`` (no rule fires) and changes one thing, so a
failure names one rule.
"""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from sophia_tasks.derivations.gong_enrichment import derive, enrich_call
from sophia_tasks.derivations.gong_enrichment.config import resolve_config
from sophia_tasks.derivations.gong_enrichment.defaults import (
    DEFAULT_CONFIG,
    OPPORTUNITY_CODES,
    RISK_CODES,
    RULES_VERSION,
)
from sophia_tasks.derivations.gong_enrichment.rules import compute_enrichment
from sophia_tasks.derivations.gong_enrichment.values import truncate
from tests.fixtures.gong_builders import NOW, enrich, evidence, opportunity_codes, quiet_call, risk_codes


def test_quiet_call_fires_nothing() -> None:
    e = enrich(quiet_call())
    assert e["risk_indicators"] == []
    assert e["opportunities"] == []
    assert e["risk_score"] == 0
    assert e["next_best_actions"] == []
    assert e["rules_version"] == RULES_VERSION
    assert e["enriched_at"] == "2026-11-25T12:00:00.000Z"


# -- competitor_mentioned ------------------------------------------------------------------
@pytest.mark.parametrize("where", ["brief", "keyPoints", "highlights", "outline", "actionItems", "comments"])
def test_competitor_named_in_text_fires(where: str) -> None:
    call = quiet_call()
    text = "They also looked at Salesloft last year"
    c = call["content"]
    if where == "brief":
        c["brief"] = text
    elif where == "keyPoints":
        c["keyPoints"].append({"text": text})
    elif where == "highlights":
        c["highlights"] = [{"title": "Highlights", "items": [{"text": text, "startTimes": [12]}]}]
    elif where == "outline":
        c["outline"] = [{"section": "Competition", "startTime": 0, "duration": 60, "items": [{"text": text}]}]
    elif where == "actionItems":
        c["pointsOfInterest"]["actionItems"].append({"snippet": text})
    else:
        call["collaboration"] = {"publicComments": [{"id": "1", "comment": text}]}
    e = enrich(call)
    assert "competitor_mentioned" in risk_codes(e)
    assert evidence(e, "competitor_mentioned").startswith(f'Salesloft mentioned; {where}: "')


def test_competitor_tracker_hit_fires_and_count_zero_does_not() -> None:
    call = quiet_call()
    call["content"]["trackers"] = [{"id": "1", "name": "Competition", "type": "KEYWORD", "count": 0,
                                    "occurrences": [], "phrases": ["Clari"]}]
    assert "competitor_mentioned" not in risk_codes(enrich(call))  # inactive tracker, phrases ignored too
    call["content"]["trackers"][0]["count"] = 3
    e = enrich(call)
    assert evidence(e, "competitor_mentioned") == (
        'Clari mentioned; trackers: "Clari"; tracker "Competition" hit 3 time(s)'
    )


def test_competitor_tracker_by_type_and_by_occurrences_without_count() -> None:
    call = quiet_call()
    call["content"]["trackers"] = [{"name": "Rivals", "type": "Competitor",
                                    "occurrences": [{"startTime": 1.0, "speakerId": "s2"}]}]
    assert evidence(enrich(call), "competitor_mentioned") == 'tracker "Rivals" hit'


def test_competitor_needs_whole_word_and_config_list() -> None:
    call = quiet_call()
    call["content"]["brief"] = "Our Clarity dashboard and the Wingmanship award"
    assert "competitor_mentioned" not in risk_codes(enrich(call))
    call["content"]["brief"] = "They run Acme Rival today"
    assert "competitor_mentioned" not in risk_codes(enrich(call))
    assert "competitor_mentioned" in risk_codes(enrich(call, {"competitors": ["Acme Rival"]}))


def test_competitor_inside_japanese_text_fires() -> None:
    call = quiet_call()
    call["content"]["brief"] = "佐藤さんはClariを検討中です"
    assert evidence(enrich(call), "competitor_mentioned").startswith("Clari mentioned; brief:")


def test_competitor_block_missing_does_not_fire() -> None:
    call = quiet_call()
    del call["content"]
    assert "competitor_mentioned" not in risk_codes(enrich(call))


# -- pricing_objection ---------------------------------------------------------------------
@pytest.mark.parametrize("text", ["Honestly this is too expensive for us", "Can we get a DISCOUNT?",
                                  "We can\u2019t afford it this year", "There are budget constraints"])
def test_pricing_objection_keywords_fire(text: str) -> None:
    call = quiet_call()
    call["content"]["keyPoints"].append({"text": text})
    e = enrich(call)
    assert "pricing_objection" in risk_codes(e)
    assert evidence(e, "pricing_objection").startswith('keyPoints: "')


def test_pricing_objection_tracker_fires() -> None:
    call = quiet_call()
    call["content"]["trackers"] = [{"name": "Objections - Pricing", "type": "SMART", "count": 1}]
    assert evidence(enrich(call), "pricing_objection") == 'tracker "Objections - Pricing" hit 1 time(s)'


def test_pricing_talk_without_objection_does_not_fire() -> None:
    call = quiet_call()
    call["content"]["brief"] = "We reviewed the price list and the payment terms"
    call["content"]["trackers"] = [{"name": "Pricing", "type": "KEYWORD", "count": 4}]
    e = enrich(call)
    assert "pricing_objection" not in risk_codes(e)
    assert "budget_discussed" in opportunity_codes(e)


def test_pricing_objection_block_missing_does_not_fire() -> None:
    call = quiet_call()
    call["content"] = None
    assert "pricing_objection" not in risk_codes(enrich(call))


# -- no_next_steps -------------------------------------------------------------------------
def _without_next_steps() -> dict[str, Any]:
    call = quiet_call()
    call["content"]["pointsOfInterest"]["actionItems"] = []
    return call


def test_no_next_steps_fires_without_action_items_or_language() -> None:
    e = enrich(_without_next_steps())
    assert risk_codes(e) == ["no_next_steps"]
    assert evidence(e, "no_next_steps") == "no action items and no next-step language in the call content"


@pytest.mark.parametrize("change", ["action_item", "language", "tracker", "topic"])
def test_no_next_steps_does_not_fire_with_any_next_step(change: str) -> None:
    call = _without_next_steps()
    c = call["content"]
    if change == "action_item":
        c["pointsOfInterest"]["actionItems"] = [{"snippet": ""}]
    elif change == "language":
        c["brief"] += " Sam will follow up with a calendar invite."
    elif change == "tracker":
        c["trackers"] = [{"name": "Next Steps", "count": 2}]
    else:
        c["topics"] = [{"name": "Next Steps", "duration": 45}]
    assert "no_next_steps" not in risk_codes(enrich(call))


def test_no_next_steps_ignores_topic_with_zero_duration() -> None:
    call = _without_next_steps()
    call["content"]["topics"] = [{"name": "Next Steps", "duration": 0}]
    assert "no_next_steps" in risk_codes(enrich(call))


def test_no_next_steps_block_missing_does_not_fire() -> None:
    call = _without_next_steps()
    del call["content"]
    assert "no_next_steps" not in risk_codes(enrich(call))


# -- rep_dominated -------------------------------------------------------------------------
def test_rep_dominated_from_speakers_fires() -> None:
    call = quiet_call()
    call["interaction"]["speakers"] = [{"id": "s1", "userId": "u1", "talkTime": 700}, {"id": "s2", "talkTime": 300}]
    e = enrich(call)
    assert evidence(e, "rep_dominated") == "internal talk ratio 0.70 > 0.65 (from speakers' talk time)"
    assert e["metrics"]["talk_ratio"] == 0.7


def test_rep_dominated_maps_speakers_by_user_id_and_unknown_speakers_count_as_customer() -> None:
    call = quiet_call()
    call["parties"][0]["speakerId"] = None  # the rep is found through userId
    call["interaction"]["speakers"] = [{"id": "x1", "userId": "u1", "talkTime": 600},
                                       {"id": "x2", "talkTime": 200},  # no party: not a Gong user
                                       {"id": "x3", "userId": "u9", "talkTime": 200}]  # Gong user without party
    assert enrich(call)["metrics"]["talk_ratio"] == 0.8


def test_rep_dominated_falls_back_to_talk_ratio_stat_and_percentages() -> None:
    call = quiet_call()
    call["interaction"]["speakers"] = []
    call["interaction"]["interactionStats"] = [{"name": "Talk Ratio", "value": 72}]
    e = enrich(call)
    assert evidence(e, "rep_dominated") == 'internal talk ratio 0.72 > 0.65 (from interactionStats "Talk Ratio")'


def test_rep_dominated_at_threshold_does_not_fire() -> None:
    call = quiet_call()
    call["interaction"]["speakers"] = [{"id": "s1", "userId": "u1", "talkTime": 65}, {"id": "s2", "talkTime": 35}]
    assert "rep_dominated" not in risk_codes(enrich(call))
    assert "rep_dominated" in risk_codes(enrich(call, {"rep_dominated_talk_ratio": 0.6}))


def test_rep_dominated_not_for_internal_meetings() -> None:
    call = quiet_call()
    call["metaData"]["scope"] = "Internal"
    call["interaction"]["speakers"] = [{"id": "s1", "userId": "u1", "talkTime": 900}]
    assert "rep_dominated" not in risk_codes(enrich(call))


def test_rep_dominated_block_missing_does_not_fire() -> None:
    call = quiet_call()
    del call["interaction"]
    e = enrich(call)
    assert "rep_dominated" not in risk_codes(e)
    assert e["metrics"]["talk_ratio"] is None


# -- long_monologue ------------------------------------------------------------------------
def test_long_monologue_fires_above_threshold_only() -> None:
    call = quiet_call()
    call["interaction"]["interactionStats"] = [{"name": "Longest Monologue", "value": 150}]
    assert "long_monologue" not in risk_codes(enrich(call))
    call["interaction"]["interactionStats"] = [{"name": "Longest Monologue", "value": 151.5}]
    e = enrich(call)
    assert evidence(e, "long_monologue") == "longest monologue 151.5 s > 150 s"
    assert e["metrics"]["longest_monologue_seconds"] == 151.5


def test_long_monologue_block_missing_or_stat_missing_does_not_fire() -> None:
    call = quiet_call()
    call["interaction"]["interactionStats"] = [{"name": "Interactivity", "value": 900}]
    assert "long_monologue" not in risk_codes(enrich(call))
    del call["interaction"]
    assert "long_monologue" not in risk_codes(enrich(call))


# -- no_decision_maker ---------------------------------------------------------------------
@pytest.mark.parametrize("title", ["VP Finance", "Chief Revenue Officer", "CFO", "Director, IT", "Head of Sales",
                                   "President", "Co-Founder", "Owner", "営業部長 🌸", "🚀 SVP Growth"])
def test_senior_titles_are_decision_makers(title: str) -> None:
    call = quiet_call()
    call["parties"][1]["title"] = title
    assert "no_decision_maker" not in risk_codes(enrich(call))


@pytest.mark.parametrize("title", ["Sales Manager", "Product Owner", "Executive Assistant to the CEO", "VPN Engineer",
                                   "", None])
def test_junior_titles_fire_no_decision_maker(title: str | None) -> None:
    call = quiet_call()
    call["parties"][1]["title"] = title
    e = enrich(call)
    assert evidence(e, "no_decision_maker") == "1 External party, none with a senior title"


def test_senior_internal_party_does_not_count() -> None:
    call = quiet_call()
    call["parties"][0]["title"] = "Chief Executive Officer"
    call["parties"][1]["affiliation"] = "Internal"
    assert evidence(enrich(call), "no_decision_maker") == "no External party on the call"


def test_no_decision_maker_not_for_internal_meetings_or_missing_parties() -> None:
    call = quiet_call()
    call["parties"][1]["title"] = "Analyst"
    call["metaData"]["scope"] = "Internal"
    assert "no_decision_maker" not in risk_codes(enrich(call))
    call = quiet_call()
    del call["parties"]
    assert "no_decision_maker" not in risk_codes(enrich(call))
    call["parties"] = []
    assert "no_decision_maker" not in risk_codes(enrich(call))


# -- short_call ----------------------------------------------------------------------------
@pytest.mark.parametrize("duration, fires", [(0, True), (299, True), (299.9, True), (300, False), (3600, False),
                                             ("120", True), (None, False), ("n/a", False), (-5, False)])
def test_short_call(duration: Any, fires: bool) -> None:
    call = quiet_call()
    call["metaData"]["duration"] = duration
    assert ("short_call" in risk_codes(enrich(call))) is fires


def test_short_call_duration_missing_does_not_fire() -> None:
    call = quiet_call()
    del call["metaData"]["duration"]
    e = enrich(call)
    assert "short_call" not in risk_codes(e)
    assert e["metrics"]["duration_seconds"] is None


# -- negative_outcome ----------------------------------------------------------------------
@pytest.mark.parametrize("category", ["Lost", "not interested", " Disqualified ", "Closed Lost"])
def test_negative_outcome_fires(category: str) -> None:
    call = quiet_call()
    call["content"]["callOutcome"] = {"id": "9", "category": category, "name": "Went with incumbent"}
    e = enrich(call)
    assert evidence(e, "negative_outcome") == f'call outcome "{category.strip()}" (Went with incumbent)'


@pytest.mark.parametrize("outcome", [{"category": "Won"}, {"category": None}, {}, None, "Lost"])
def test_negative_outcome_does_not_fire(outcome: Any) -> None:
    call = quiet_call()
    call["content"]["callOutcome"] = outcome
    assert "negative_outcome" not in risk_codes(enrich(call))


@pytest.mark.parametrize("outcome, expected", [
    ({"category": "Negative", "name": "Went with incumbent"}, 'call outcome "Negative" (Went with incumbent)'),
    ({"category": "NEGATIVE"}, 'call outcome "NEGATIVE"'),
    ({"category": "Other", "name": "Closed Lost"}, 'call outcome "Closed Lost" (Other)'),
    ({"name": " not INTERESTED "}, 'call outcome "not INTERESTED"'),
    ({"category": None, "name": "lost"}, 'call outcome "lost"'),
])
def test_negative_outcome_matches_the_name_and_a_negative_category(outcome: dict, expected: str) -> None:
    call = quiet_call()
    call["content"]["callOutcome"] = outcome
    assert evidence(enrich(call), "negative_outcome") == expected


@pytest.mark.parametrize("outcome", [{"category": "Positive", "name": "Closed Won"}, {"name": "Follow-up"},
                                     {"category": "Neutral", "name": None}, {"name": 7}])
def test_negative_outcome_ignores_other_names(outcome: dict) -> None:
    call = quiet_call()
    call["content"]["callOutcome"] = outcome
    assert "negative_outcome" not in risk_codes(enrich(call))


def test_negative_outcome_configured_list_applies_to_the_name_too() -> None:
    call = quiet_call()
    call["content"]["callOutcome"] = {"category": "Other", "name": "Ghosted"}
    assert "negative_outcome" in risk_codes(enrich(call, {"negative_outcome_categories": ["GHOSTED"]}))
    # The configured list replaces the defaults: "Negative" is no longer one.
    call["content"]["callOutcome"] = {"category": "Negative"}
    assert "negative_outcome" not in risk_codes(enrich(call, {"negative_outcome_categories": ["ghosted"]}))


def test_negative_outcome_list_is_configurable_and_block_missing_is_silent() -> None:
    call = quiet_call()
    call["content"]["callOutcome"] = {"category": "Ghosted"}
    assert "negative_outcome" in risk_codes(enrich(call, {"negative_outcome_categories": ["ghosted"]}))
    del call["content"]
    assert "negative_outcome" not in risk_codes(enrich(call, {"negative_outcome_categories": ["ghosted"]}))


# -- opportunities -------------------------------------------------------------------------
@pytest.mark.parametrize("code, text", [
    ("expansion_interest", "They want more seats for the support org"),
    ("expansion_interest", "Expanding to EMEA is next"),
    ("budget_discussed", "Budget for this is set aside"),
    ("timeline_defined", "Go-live must happen by the end of March"),
    ("timeline_defined", "Target is Q3"),
    ("champion_identified", "Priya will be our internal advocate"),
])
def test_opportunity_keywords_fire(code: str, text: str) -> None:
    call = quiet_call()
    call["content"]["keyPoints"].append({"text": text})
    e = enrich(call)
    assert opportunity_codes(e) == [code]
    assert evidence(e, code).startswith('keyPoints: "')


@pytest.mark.parametrize("code, tracker", [("expansion_interest", "Upsell"), ("budget_discussed", "Budget"),
                                           ("timeline_defined", "Timing"), ("champion_identified", "Champion")])
def test_opportunity_trackers_fire(code: str, tracker: str) -> None:
    call = quiet_call()
    call["content"]["trackers"] = [{"name": tracker, "count": 1}]
    assert code in opportunity_codes(enrich(call))


def test_timeline_from_crm_close_date() -> None:
    call = quiet_call()
    call["context"] = [{"system": "Salesforce", "objects": [
        {"objectType": "Opportunity", "fields": [{"name": "CloseDate", "value": "2026-12-31"}]}]}]
    assert evidence(enrich(call), "timeline_defined") == "Salesforce Opportunity CloseDate = 2026-12-31"
    call["context"][0]["objects"][0]["fields"][0]["value"] = None
    assert "timeline_defined" not in opportunity_codes(enrich(call))


def test_multi_threaded_counts_distinct_external_parties() -> None:
    call = quiet_call()
    buyer = call["parties"][1]
    call["parties"] += [dict(buyer, id="p3", name="Bo", speakerId="s3"), dict(buyer)]  # dict(buyer): a duplicate
    assert "multi_threaded" not in opportunity_codes(enrich(call))
    call["parties"].append(dict(buyer, id="p4", name="Cy", speakerId="s4"))
    e = enrich(call)
    assert evidence(e, "multi_threaded") == "3 External parties on the call"
    assert e["metrics"]["external_parties"] == 3
    assert "multi_threaded" in opportunity_codes(enrich(quiet_call(), {"multi_threaded_min_external_parties": 1}))


def test_opportunities_block_missing_do_not_fire() -> None:
    call = {"metaData": {"id": "1", "duration": 900}}
    assert opportunity_codes(enrich(call)) == []


# -- score, summary, actions, metrics ------------------------------------------------------
def test_score_is_weighted_sum_capped_at_100() -> None:
    call = _without_next_steps()  # high: 30
    call["metaData"]["duration"] = 60  # low: 5
    call["content"]["brief"] = "Too expensive, and Clari is cheaper"  # two mediums: 30
    e = enrich(call)
    assert sorted(risk_codes(e)) == ["competitor_mentioned", "no_next_steps", "pricing_objection", "short_call"]
    assert e["risk_score"] == 65
    assert enrich(call, {"severity_weights": {"high": 90}})["risk_score"] == 100
    assert enrich(call, {"severity_weights": {"low": 0, "medium": 0, "high": 0}})["risk_score"] == 0


def test_summary_is_at_most_600_chars_and_keeps_outcome_and_risks() -> None:
    call = _without_next_steps()
    call["content"]["brief"] = "word " * 400
    call["content"]["keyPoints"] = [{"text": "point " * 50}] * 5
    summary = enrich(call)["executive_summary"]
    assert len(summary) <= 600
    assert summary.endswith("Outcome: Neutral (Information shared). Top risks: no next steps (high).")
    assert "word\u2026 Key points: point" in summary  # cut after a whole word
    assert "point\u2026 Outcome:" in summary


def test_summary_config_limits() -> None:
    call = quiet_call()
    call["content"]["keyPoints"] = [{"text": f"Point {i}"} for i in range(5)]
    summary = enrich(call, {"summary_max_key_points": 2, "summary_max_chars": 100})["executive_summary"]
    assert "Key points: Point 0; Point 1." in summary
    assert len(summary) <= 100


@pytest.mark.parametrize("text, limit, expected", [
    ("short", 10, "short"),
    ("one two three four", 12, "one two\u2026"),
    ("one two, three", 12, "one two\u2026"),
    ("東京都の営業チームとの打ち合わせ", 8, "東京都の営業チ\u2026"),
    ("abc", 1, "\u2026"),
])
def test_truncate_on_word_boundary(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected
    assert len(truncate(text, limit)) <= limit


def test_next_best_actions_order_and_lost_deal_drops_opportunities() -> None:
    call = _without_next_steps()
    call["content"]["brief"] = "They want more seats, but it is too expensive."
    e = enrich(call)
    actions = [(a["priority"], a["reason"].split(":")[0]) for a in e["next_best_actions"]]
    assert actions == [(1, "no_next_steps"), (2, "pricing_objection"), (2, "expansion_interest")]
    call["content"]["callOutcome"] = {"category": "Lost"}
    actions = [a["reason"].split(":")[0] for a in enrich(call)["next_best_actions"]]
    assert actions == ["negative_outcome", "no_next_steps", "pricing_objection"]


def test_metrics() -> None:
    e = enrich(quiet_call())
    assert e["metrics"] == {"talk_ratio": 0.5, "longest_monologue_seconds": 60,
                            "questions": {"company": 4, "non_company": 6},
                            "external_parties": 1, "internal_parties": 1, "duration_seconds": 1800}


def test_evidence_never_exceeds_240_chars() -> None:
    call = quiet_call()
    call["content"]["trackers"] = [{"name": "Competitors " + "x" * 500, "count": 1}]
    call["content"]["brief"] = "Clari " + "y" * 1000
    for item in enrich(call)["risk_indicators"]:
        assert len(item["evidence"]) <= 240


# -- the document around the enrichment ----------------------------------------------------
def test_output_is_masked_copy_with_meta_and_without_media() -> None:
    call = quiet_call()
    call["_meta"] = {"event_id": "e1", "published_at": "2026-11-24T15:00:00+00:00", "sender": "bot@example.com"}
    call["media"] = {"audioUrl": "https://x/a?sig=1", "videoUrl": "https://x/v?sig=1"}
    call["parties"][1]["emailAddress"] = "ada@buyer.io"
    call["enrichment"] = {"risk_score": 99}  # a stale enrichment from an earlier run
    before = copy.deepcopy(call)
    out = derive([call], None, NOW)[0]
    assert call == before  # input untouched
    assert out["_meta"] == before["_meta"] and out["_meta"] is not call["_meta"]
    assert "media" not in out
    assert out["parties"][1]["emailAddress"] == "***@buyer.io"
    assert out["enrichment"]["risk_score"] == 0
    out["metaData"]["title"] = "changed"
    assert call["metaData"]["title"] == "Demo – Initech"  # a deep copy, not shared


def test_derive_keeps_order_and_is_deterministic() -> None:
    calls = [quiet_call(), _without_next_steps(), {"metaData": {"id": "3"}}]
    first = derive(calls, {}, NOW)
    assert [d["metaData"]["id"] for d in first] == ["7782342274025937895", "7782342274025937895", "3"]
    assert json.dumps(first, sort_keys=True) == json.dumps(derive(calls, {}, NOW), sort_keys=True)
    assert derive([], None, NOW) == []


def test_enrich_call_and_compute_enrichment_match_derive() -> None:
    cfg = resolve_config({"short_call_seconds": 10})
    call = _without_next_steps()
    via_derive = derive([call], {"short_call_seconds": 10}, NOW)[0]
    assert enrich_call(call, cfg, NOW) == via_derive
    masked = {k: v for k, v in via_derive.items() if k != "enrichment"}
    assert compute_enrichment(masked, cfg, "2026-11-25T12:00:00.000Z") == via_derive["enrichment"]


def test_enriched_at_is_utc_iso() -> None:
    from datetime import datetime, timedelta, timezone

    local = datetime(2026, 11, 25, 13, 30, 15, 250000, tzinfo=timezone(timedelta(hours=1)))
    assert derive([quiet_call()], None, local)[0]["enrichment"]["enriched_at"] == "2026-11-25T12:30:15.250Z"
    naive = datetime(2026, 11, 25, 12, 30)
    assert derive([quiet_call()], None, naive)[0]["enrichment"]["enriched_at"] == "2026-11-25T12:30:00.000Z"
    stamp = derive([quiet_call()])[0]["enrichment"]["enriched_at"]
    assert stamp.endswith("Z") and datetime.fromisoformat(stamp[:-1]).year >= 2024


@pytest.mark.parametrize("call", [
    {"metaData": {"id": "1"}},
    {"metaData": None},
    {},
    {"metaData": {"id": "1"}, "content": "not a block", "parties": {"not": "a list"}, "interaction": [],
     "collaboration": None, "context": "x"},
    {"metaData": {"id": "1", "duration": float("nan")}, "content": {"trackers": [None, 3, {"count": "many"}],
                                                                     "keyPoints": [None, {"text": None}, "plain"],
                                                                     "pointsOfInterest": {"actionItems": [None]}}},
])
def test_odd_calls_do_not_raise(call: dict[str, Any]) -> None:
    e = derive([call], None, NOW)[0]["enrichment"]
    assert 0 <= e["risk_score"] <= 100
    assert {r["code"] for r in e["risk_indicators"]} <= set(RISK_CODES)
    assert {o["code"] for o in e["opportunities"]} <= set(OPPORTUNITY_CODES)


def test_non_mapping_document_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="mapping"):
        derive(["not a call"], None, NOW)  # type: ignore[list-item]


def test_every_rule_list_and_threshold_is_in_default_config() -> None:
    # rule bodies read keyword lists and thresholds from the config, never from literals
    for key in ("competitors", "pricing_objection_keywords", "next_step_keywords", "senior_title_keywords",
                "negative_outcome_categories", "rep_dominated_talk_ratio", "long_monologue_seconds",
                "short_call_seconds", "multi_threaded_min_external_parties"):
        assert key in DEFAULT_CONFIG
    assert DEFAULT_CONFIG["rep_dominated_talk_ratio"] == 0.65
    assert DEFAULT_CONFIG["long_monologue_seconds"] == 150
    assert DEFAULT_CONFIG["short_call_seconds"] == 300


def test_text_whose_lowercase_changes_length_keeps_evidence_aligned() -> None:
    # "İ".lower() is two characters: the scanner falls back to a case-insensitive pattern
    call = quiet_call()
    call["content"]["brief"] = "İİİ İstanbul ekibi CLARI kullanıyor ve DISCOUNT istiyor"
    e = enrich(call)
    assert evidence(e, "competitor_mentioned") == ('Clari mentioned; brief: "İİİ İstanbul ekibi CLARI kullanıyor '
                                                   've DISCOUNT istiyor"')
    assert evidence(e, "pricing_objection").startswith('brief: "İİİ İstanbul')
