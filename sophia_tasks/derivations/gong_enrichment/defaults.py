"""The rule codes and every tunable default in one place: the flow spec's ``config`` may override
any ``DEFAULT_CONFIG`` key (``docs/enrichment.md`` describes each), and a bad override is a ``ConfigError``."""
from __future__ import annotations

from typing import Any

from sophia_tasks.derivations.pii import DEFAULT_EMAIL_FIELDS, DEFAULT_PHONE_FIELDS

RULES_VERSION = "2026.11.1"

RISK_CODES: tuple[str, ...] = (
    "negative_outcome",
    "no_next_steps",
    "no_decision_maker",
    "pricing_objection",
    "competitor_mentioned",
    "rep_dominated",
    "long_monologue",
    "short_call",
)
OPPORTUNITY_CODES: tuple[str, ...] = (
    "expansion_interest",
    "budget_discussed",
    "timeline_defined",
    "champion_identified",
    "multi_threaded",
)
SEVERITIES: tuple[str, ...] = ("low", "medium", "high")

DEFAULT_CONFIG: dict[str, Any] = {
    # -- thresholds ------------------------------------------------------------------
    "rep_dominated_talk_ratio": 0.65,  # internal share of talk time above which the rep dominated
    "long_monologue_seconds": 150,  # interactionStats "Longest Monologue" above this is a risk
    "short_call_seconds": 300,  # metaData.duration below this is a short call
    "multi_threaded_min_external_parties": 3,  # "several" buyers on the call
    # -- scoring ---------------------------------------------------------------------
    "severity_weights": {"low": 5, "medium": 15, "high": 30},  # risk_score = min(100, sum)
    "risk_severities": {
        "negative_outcome": "high",
        "no_next_steps": "high",
        "no_decision_maker": "medium",
        "pricing_objection": "medium",
        "competitor_mentioned": "medium",
        "rep_dominated": "medium",
        "long_monologue": "low",
        "short_call": "low",
    },
    # -- summary ---------------------------------------------------------------------
    "summary_max_chars": 600,
    "summary_max_key_points": 3,
    "summary_max_risks": 3,
    # -- keyword lists (case-insensitive, whole words; a trailing * matches any ending) --
    "competitors": [
        "Chorus", "Chorus.ai", "Clari", "Salesloft", "Outreach.io", "Avoma", "Jiminny", "ExecVision",
        "Wingman", "Fireflies", "Otter.ai", "People.ai", "Revenue.io",
    ],
    "competitor_tracker_keywords": ["competitor", "competition"],
    "pricing_objection_keywords": [
        "too expensive", "too pricey", "price is too high", "pricing is too high", "over budget",
        "out of budget", "over our budget", "not in the budget", "no budget", "can't afford",
        "cannot afford", "cheaper", "discount*", "price objection", "pricing objection",
        "budget constraint*", "cost is a concern",
    ],
    "pricing_objection_tracker_keywords": [
        "pricing objection", "price objection", "objection - pricing", "objections - pricing",
        "objection: pricing", "budget objection",
    ],
    "next_step_keywords": [
        "next step*", "follow up", "follow-up", "follow-ups", "action item*", "schedule a",
        "scheduled a", "set up a", "book a", "send over", "circle back", "touch base", "reconvene",
        "we'll send", "i'll send", "will send", "calendar invite", "let's meet", "meet again",
    ],
    "next_step_tracker_keywords": ["next step"],
    "expansion_keywords": [
        "expand*", "expansion", "upsell", "up-sell", "cross-sell", "more seats", "additional seats",
        "more licenses", "more licences", "additional licenses", "other teams", "other departments",
        "roll out", "rollout", "company-wide", "add users", "more users",
    ],
    "expansion_tracker_keywords": ["expansion", "upsell", "cross-sell"],
    "budget_keywords": [
        "budget*", "pricing", "price", "prices", "quote*", "cost", "costs", "spend", "purchase order",
        "procurement",
    ],
    "budget_tracker_keywords": ["budget", "pricing", "price"],
    "timeline_keywords": [
        "timeline*", "deadline*", "go-live", "go live", "launch date", "start date", "kickoff", "kick-off",
        "by end of", "by the end of", "end of quarter", "end of the quarter", "this quarter",
        "next quarter", "end of year", "end of the year", "q1", "q2", "q3", "q4",
    ],
    "timeline_tracker_keywords": ["timeline", "timing", "time frame", "timeframe"],
    "timeline_context_fields": ["CloseDate", "Close Date", "Go Live Date"],
    "champion_keywords": [
        "champion*", "internal advocate", "executive sponsor", "sponsor", "i'll push", "i will push",
        "i'll advocate", "i will advocate", "sell it internally", "pitch it internally", "rooting for",
    ],
    "champion_tracker_keywords": ["champion"],
    "senior_title_keywords": [
        "VP", "SVP", "EVP", "AVP", "Vice President", "Chief", "CEO", "CFO", "CTO", "COO", "CRO", "CMO",
        "CIO", "CISO", "CPO", "Director", "Head of", "President", "Founder", "Owner", "General Manager",
        "Managing Director", "Geschäftsführer", "Directeur", "Directora", "社長", "部長", "取締役", "总监",
        "总裁",
    ],
    "senior_title_exclude_keywords": ["Assistant", "Product Owner", "Intern"],
    # Matched against the outcome's category and its name (case-insensitive).
    "negative_outcome_categories": [
        "Negative", "Lost", "Closed Lost", "Not interested", "Disqualified", "Unqualified", "No decision",
    ],
    # -- PII -------------------------------------------------------------------------
    "pii_email_fields": list(DEFAULT_EMAIL_FIELDS),
    "pii_phone_fields": list(DEFAULT_PHONE_FIELDS),
    "pii_phone_keep_last_digits": 2,
}

_CODE_ORDER: dict[str, int] = {c: i for i, c in enumerate(RISK_CODES + OPPORTUNITY_CODES)}
# the text signals: each reads the ``<name>_keywords`` and ``<name>_tracker_keywords`` keys
_SIGNALS: tuple[str, ...] = ("pricing_objection", "next_step", "expansion", "budget", "timeline", "champion")


class ConfigError(ValueError):
    """The derivation config is invalid; the message names the key."""
