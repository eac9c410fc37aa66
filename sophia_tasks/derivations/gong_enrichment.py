"""The ``gong_calls_enriched`` derivation: deterministic risk/opportunity rules plus PII masking.

Why rules and not a model: the output feeds revenue-ops dashboards and alerts, so it
must be explainable (every indicator carries its evidence), reproducible (same call,
same config, same ``now`` -> same bytes) and cheap (thousands of calls per second on
one core, no network). Every keyword list and threshold lives in ``DEFAULT_CONFIG``
and can be overridden from the flow spec; ``docs/enrichment.md`` describes each rule.

Pipeline: ``derive`` -> ``enrich_call`` per document -> mask PII (``pii.py``) ->
``compute_enrichment`` on the *masked* call, so evidence and summary can never
quote an email or phone number.
"""
from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

from sophia_tasks.derivations.pii import DEFAULT_EMAIL_FIELDS, DEFAULT_PHONE_FIELDS, PiiMasker
from sophia_tasks.gcpause import cycle_collector_paused

__all__ = [
    "RULES_VERSION",
    "DEFAULT_CONFIG",
    "RISK_CODES",
    "OPPORTUNITY_CODES",
    "ConfigError",
    "ResolvedConfig",
    "resolve_config",
    "derive",
    "enrich_call",
    "compute_enrichment",
    "truncate",
]

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
    "negative_outcome_categories": [
        "Lost", "Closed Lost", "Not interested", "Disqualified", "Unqualified", "No decision",
    ],
    # -- PII -------------------------------------------------------------------------
    "pii_email_fields": list(DEFAULT_EMAIL_FIELDS),
    "pii_phone_fields": list(DEFAULT_PHONE_FIELDS),
    "pii_phone_keep_last_digits": 2,
}

_KEYWORD_LIST_KEYS: tuple[str, ...] = tuple(
    k for k, v in DEFAULT_CONFIG.items() if isinstance(v, list)
)

# What to do about each finding: (priority, action). Lower priority = do first.
_ACTIONS: dict[str, tuple[int, str]] = {
    "negative_outcome": (1, "Run a loss review with the rep and record the loss reason in the CRM"),
    "no_next_steps": (1, "Send a recap that proposes a dated next meeting with named owners"),
    "no_decision_maker": (2, "Ask your contact to bring the economic buyer (VP or C-level) to the next meeting"),
    "pricing_objection": (2, "Build an ROI case and agree a pricing strategy with deal desk before the next call"),
    "competitor_mentioned": (2, "Send the competitive battlecard and position against the named competitor"),
    "rep_dominated": (3, "Coach the rep to ask more discovery questions and let the customer talk"),
    "long_monologue": (3, "Coach the rep to break long explanations with check-in questions"),
    "short_call": (4, "Check whether the call was cut short and reschedule it if needed"),
    "expansion_interest": (2, "Loop in the account manager to scope the expansion (seats, teams, products)"),
    "timeline_defined": (2, "Turn the stated timeline into a mutual action plan with the buyer"),
    "champion_identified": (2, "Equip the champion with a business case they can share internally"),
    "budget_discussed": (3, "Record the budget amount and approval process on the opportunity"),
    "multi_threaded": (4, "Send each stakeholder a tailored follow-up to keep every thread warm"),
}
_CODE_ORDER: dict[str, int] = {c: i for i, c in enumerate(RISK_CODES + OPPORTUNITY_CODES)}

_SIGNALS: tuple[str, ...] = ("pricing_objection", "next_step", "expansion", "budget", "timeline", "champion")
_MATCH_CACHE_MAX = 20_000
_EVIDENCE_MAX = 240
_SNIPPET_WIDTH = 60
_SEGMENT_SEP = "\x00"  # joins text segments; matches no keyword pattern, so no match spans two segments
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


class ConfigError(ValueError):
    """The derivation config is invalid; the message names the key."""


# -- config ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signal:
    """A text signal: a compiled keyword pattern plus tracker-name keywords."""

    name: str
    pattern: re.Pattern[str] | None
    tracker_keywords: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedConfig:
    """The merged, validated config with regexes compiled once (it is cached per distinct config)."""

    values: Mapping[str, Any]
    scan_pattern: re.Pattern[str] | None  # every text keyword of every signal, as one trie, lower-case
    scan_keywords: tuple[str, ...]  # for the case-insensitive scanner, compiled on first need
    match_cache: dict[str, tuple[tuple[str, ...], str | None]]  # matched text -> (signals, competitor)
    tracker_cache: dict[tuple[str, str], tuple[str, ...]]  # a tracker's (name, type) -> its signals
    rep_dominated_talk_ratio: float
    long_monologue_seconds: float
    short_call_seconds: float
    threshold_labels: Mapping[str, str]  # the three thresholds above as evidence shows them ("0.65", "150")
    multi_threaded_min_external_parties: int
    summary_max_chars: int
    summary_max_key_points: int
    summary_max_risks: int
    severity: Mapping[str, str]
    weight: Mapping[str, int]
    competitor_pattern: re.Pattern[str] | None
    competitor_names: Mapping[str, str]  # lower-cased -> configured spelling
    competitor_tracker_keywords: tuple[str, ...]
    signals: Mapping[str, Signal]
    senior_title_pattern: re.Pattern[str] | None
    senior_title_scan: re.Pattern[str] | None  # senior_title_pattern as a trie scanner: same titles, faster
    senior_title_exclude_pattern: re.Pattern[str] | None
    risk_order: Mapping[str, tuple[int, int]]  # risk code -> its rank among the summary's top risks
    risk_labels: Mapping[str, str]  # risk code -> "pricing objection (medium)" for the summary
    negative_outcomes: frozenset[str]
    timeline_context_fields: frozenset[str]
    masker: PiiMasker


def _edge(ch: str) -> str:
    """How a keyword that begins or ends with ``ch`` meets its neighbours.

    "ascii": an ASCII letter, digit or _ must not touch another one. Deliberately not
    ``\w``: Japanese or Chinese text runs words together, and "Clariを検討" must still
    name Clari. "word": other letters (é, ж, ع) use Unicode ``\w`` boundaries.
    "none": CJK characters and symbols need no boundary at all.
    """
    if ch.isascii() and (ch.isalnum() or ch == "_"):
        return "ascii"
    if (ch.isalnum() or ch == "_") and not _CJK.match(ch):
        return "word"
    return "none"


_BEFORE = {"ascii": r"(?<![a-z0-9_])", "word": r"(?<!\w)", "none": ""}
_AFTER = {"ascii": r"(?![a-z0-9_])", "word": r"(?!\w)", "none": ""}
_WILDCARD = {"ascii": r"[a-z0-9_]*", "word": r"\w*", "none": r"\w*"}
# what the scanner consumes just before a keyword (see _scan_regex)
_LEAD = {"ascii": r"[^a-z0-9_]", "word": r"\W", "none": ""}


def _split_keyword(keyword: str) -> tuple[str, bool]:
    """(normalised keyword, has trailing * wildcard)."""
    kw = keyword.strip()
    wildcard = kw.endswith("*")
    if wildcard:
        kw = kw[:-1].rstrip()
    return " ".join(kw.split()), wildcard


def _keyword_regex(keyword: str) -> str:
    """One keyword as a regex (compiled case-insensitive): spaces match any whitespace,
    a trailing * any word ending, apostrophes either form, boundaries as ``_edge`` says."""
    kw, wildcard = _split_keyword(keyword)
    if not kw:
        raise ConfigError(f"empty keyword {keyword!r}")
    body = r"\s+".join(re.escape(part) for part in kw.split(" "))
    body = body.replace("'", "['\u2019]")
    end_edge = _edge(kw[-1])
    end = _WILDCARD[end_edge] if wildcard else _AFTER[end_edge]
    return f"{_BEFORE[_edge(kw[0])]}{body}{end}"


def _compile_keywords(keywords: Iterable[str]) -> re.Pattern[str] | None:
    """All keywords of one list as a single alternation (longest first, so phrases win)."""
    parts = sorted({_keyword_regex(k) for k in keywords}, key=lambda p: (-len(p), p))
    if not parts:
        return None
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE)


def _trie_regex(keywords: Iterable[str], as_written: bool = False) -> str:
    """Lower-cased keywords as one regex shaped like a trie (shared prefixes factored out).

    Why: Python's ``re`` tries alternatives one by one, so 130 flat alternatives cost
    130 attempts per text position; a trie costs one attempt per distinct next character.

    When two keywords differ only by a trailing * ("VP", "VP*"), the last one's ending
    is used. ``as_written=True`` keeps the keywords' case and every ending, so the regex
    finds a keyword wherever ``_compile_keywords``'s pattern finds one.
    """
    trie: dict[str, Any] = {}
    for keyword in keywords:
        kw, wildcard = _split_keyword(keyword if as_written else keyword.lower())
        if not kw:
            continue
        node = trie
        for ch in kw:
            node = node.setdefault(ch, {})
        end_edge = _edge(kw[-1])
        end = _WILDCARD[end_edge] if wildcard else _AFTER[end_edge]
        if as_written:
            ends = node.setdefault("", [])
            if end not in ends:
                ends.append(end)
        else:
            node[""] = end

    def build(node: dict[str, Any]) -> str:
        alts = []
        for ch in sorted(k for k in node if k != ""):
            atom = r"\s+" if ch == " " else "['\u2019]" if ch == "'" else re.escape(ch)
            alts.append(atom + build(node[ch]))
        if "" in node:
            end = node[""]
            if isinstance(end, list):
                alts.extend(end)
            else:
                alts.append(end)
        if len(alts) == 1:
            return alts[0]
        return "(?:" + "|".join(alts) + ")"

    return build(trie) if trie else ""


def _scan_regex(keywords: Iterable[str], flags: int = 0, as_written: bool = False) -> re.Pattern[str] | None:
    """The one-pass scanner, run on the lower-cased text after one leading non-word
    character (a separator, or the space before a title); ``as_written``: see
    ``_trie_regex``, for a case-insensitive scanner that must find a keyword wherever
    ``_compile_keywords``'s pattern does.

    A keyword must not continue a word, so the pattern consumes the character before
    it (a class such as ``[^a-z0-9_]``) instead of using a lookbehind: a pattern that
    starts with a character class lets ``re`` skip the inside of words in C, about
    twice as fast. The keyword itself is the pattern's only non-empty group.

    After an ASCII lead, a lookahead on the keywords' possible first letters rejects,
    in one class test, the many positions (digits, punctuation, a second space, CJK
    text) where no keyword can start, before the trie's alternation is entered. It
    accepts exactly the characters the trie's first literals accept, so the matches
    are the same (a test holds the pattern to the one without the lookahead).
    """
    groups: dict[str, list[str]] = {"ascii": [], "word": [], "none": []}
    for k in keywords:
        kw, _ = _split_keyword(k)
        if kw:
            groups[_edge(kw[0])].append(k)
    parts = []
    for edge, kws in groups.items():
        if kws:
            lead = _LEAD[edge]
            if edge == "ascii":  # first letters are ASCII letters, digits or _, matched as plain literals
                firsts = sorted({_split_keyword(k if as_written else k.lower())[0][0] for k in kws})
                lead += "(?=[" + "".join(re.escape(ch) for ch in firsts) + "])"
            parts.append(f"{lead}({_trie_regex(kws, as_written)})")
    return re.compile("|".join(parts), flags) if parts else None


@lru_cache(maxsize=8)
def _scan_regex_ci(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    """The scanner, case-insensitive: for the rare text whose ``lower()`` changes length
    (e.g. "İ"), compiled on first need (it is slow to compile and almost never used)."""
    return _scan_regex(keywords, re.IGNORECASE)


def _merge(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Overlay ``config`` on DEFAULT_CONFIG; nested mappings merge one level, lists replace."""
    merged: dict[str, Any] = {
        k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
        for k, v in DEFAULT_CONFIG.items()
    }
    if config is None:
        return merged
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    unknown = sorted(str(k) for k in config if k not in DEFAULT_CONFIG)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(sorted(DEFAULT_CONFIG))}")
    for key, value in config.items():
        if isinstance(DEFAULT_CONFIG[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: must be a mapping")
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def _number(merged: Mapping[str, Any], key: str, low: float, high: float, integer: bool = False) -> Any:
    value = merged[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(f"{key}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low:g} and {high:g}, got {value!r}")
    return int(value) if integer else float(value)


def _strings(merged: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = merged[key]
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: must be a list of strings")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip() or item.strip() == "*":
            raise ConfigError(f"{key}: every item must be a non-empty string, got {item!r}")
        out.append(item.strip())
    return tuple(out)


def _build(merged: dict[str, Any]) -> ResolvedConfig:
    """Validate every key of the merged config and compile its patterns."""
    for key in _KEYWORD_LIST_KEYS:
        merged[key] = list(_strings(merged, key))
    weights = merged["severity_weights"]
    if set(weights) != set(SEVERITIES):
        raise ConfigError(f"severity_weights: keys must be exactly {', '.join(SEVERITIES)}")
    weight_of = {}
    for sev in SEVERITIES:
        w = weights[sev]
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100:
            raise ConfigError(f"severity_weights.{sev}: must be an integer 0-100, got {w!r}")
        weight_of[sev] = w
    severity = merged["risk_severities"]
    for code, sev in severity.items():
        if code not in RISK_CODES:
            raise ConfigError(f"risk_severities.{code}: unknown risk code; known: {', '.join(RISK_CODES)}")
        if sev not in SEVERITIES:
            raise ConfigError(f"risk_severities.{code}: must be one of {', '.join(SEVERITIES)}, got {sev!r}")

    competitors = merged["competitors"]
    scan_keywords = list(competitors)
    for name in _SIGNALS:
        scan_keywords += merged[f"{name}_keywords"]
    signals = {
        name: Signal(name, _compile_keywords(merged[f"{name}_keywords"]),
                     tuple(k.lower() for k in merged[f"{name}_tracker_keywords"]))
        for name in _SIGNALS
    }
    keep = _number(merged, "pii_phone_keep_last_digits", 0, 2, integer=True)
    talk_ratio = _number(merged, "rep_dominated_talk_ratio", 0.0, 1.0)
    monologue = _number(merged, "long_monologue_seconds", 0, 86400)
    short_call = _number(merged, "short_call_seconds", 0, 86400)
    return ResolvedConfig(
        values=merged,
        scan_pattern=_scan_regex(scan_keywords),
        scan_keywords=tuple(scan_keywords),
        match_cache={},
        tracker_cache={},
        rep_dominated_talk_ratio=talk_ratio,
        long_monologue_seconds=monologue,
        short_call_seconds=short_call,
        threshold_labels={"rep_dominated": f"{talk_ratio:.2f}", "long_monologue": _fmt(monologue),
                          "short_call": _fmt(short_call)},
        multi_threaded_min_external_parties=_number(merged, "multi_threaded_min_external_parties", 1, 1000,
                                                    integer=True),
        summary_max_chars=_number(merged, "summary_max_chars", 100, 600, integer=True),
        summary_max_key_points=_number(merged, "summary_max_key_points", 0, 20, integer=True),
        summary_max_risks=_number(merged, "summary_max_risks", 0, len(RISK_CODES), integer=True),
        severity=dict(severity),
        weight={code: weight_of[severity[code]] for code in RISK_CODES},
        competitor_pattern=_compile_keywords(competitors),
        competitor_names={c.lower(): c for c in competitors},
        competitor_tracker_keywords=tuple(k.lower() for k in merged["competitor_tracker_keywords"]),
        signals=signals,
        senior_title_pattern=_compile_keywords(merged["senior_title_keywords"]),
        senior_title_scan=_scan_regex(merged["senior_title_keywords"], re.IGNORECASE, as_written=True),
        senior_title_exclude_pattern=_compile_keywords(merged["senior_title_exclude_keywords"]),
        risk_order={code: (-weight_of[severity[code]], _CODE_ORDER[code]) for code in RISK_CODES},
        risk_labels={code: f"{code.replace('_', ' ')} ({severity[code]})" for code in RISK_CODES},
        negative_outcomes=frozenset(c.casefold() for c in merged["negative_outcome_categories"]),
        timeline_context_fields=frozenset(f.casefold() for f in merged["timeline_context_fields"]),
        masker=PiiMasker(merged["pii_email_fields"], merged["pii_phone_fields"], keep),
    )


@lru_cache(maxsize=64)
def _resolve_canonical(canonical: str) -> ResolvedConfig:
    return _build(_merge(json.loads(canonical)))


def resolve_config(config: Mapping[str, Any] | ResolvedConfig | None = None) -> ResolvedConfig:
    """Merge over DEFAULT_CONFIG, validate and compile; cached on the config's canonical JSON
    so a batch pays for the regexes once per distinct config, not per call."""
    if isinstance(config, ResolvedConfig):
        return config
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    try:
        canonical = json.dumps(dict(config or {}), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config must be plain YAML/JSON data: {exc}") from None
    return _resolve_canonical(canonical)


# -- small, total helpers (never raise on odd input) -------------------------------------
def _d(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}


def _l(value: Any) -> list[Any]:
    return value if type(value) is list else []


def _s(value: Any) -> str:
    return value if type(value) is str else ""


def _num(value: Any) -> int | float | None:
    """A finite number from an int, float or numeric string; None otherwise (bools excluded)."""
    cls = type(value)
    if cls is int:
        return value
    if cls is float:
        return value if math.isfinite(value) else None
    if cls is str:
        try:
            f = float(value)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _plain(value: int | float | None) -> int | float | None:
    """Whole numbers as ints in the output (246, not 246.0)."""
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _key(value: Any) -> str | None:
    """Ids arrive as strings or numbers; compare them as strings."""
    cls = type(value)
    if cls is str:
        return value or None
    if value is None or cls is dict or cls is list or cls is bool:
        return None
    return str(value) or None


def _clean(text: str) -> str:
    """Whitespace runs to one space, ends trimmed.

    Most texts (briefs, snippets) are clean already, and for a long one three scans in C
    cost less than splitting it into words: every whitespace character other than the
    space is unprintable (a test checks all of Unicode), so a printable text without a
    double space or an edge space has nothing to collapse.
    """
    if len(text) > 40 and text.isprintable() and "  " not in text and text[0] != " " and text[-1] != " ":
        return text
    return " ".join(text.split())


def _clean_prefix(text: str, limit: int) -> str:
    """``_clean(text)``, or a prefix of it longer than ``limit``: enough for anything cut to
    ``limit`` characters, without collapsing the whitespace of a 10,000-character brief."""
    if len(text) > 2 * limit:
        cleaned = _clean(text[: 2 * limit])
        if len(cleaned) > limit:
            return cleaned
    return _clean(text)


def _fmt(value: int | float) -> str:
    """Seconds for evidence: 150, 150.5."""
    if type(value) is int:
        return str(value)
    value = _plain(value)  # type: ignore[assignment]
    return str(value) if type(value) is int else f"{value:g}"


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters at a word boundary, ending with an ellipsis.

    Scripts without spaces (CJK) fall back to a character cut: a word boundary that
    would lose more than half the room is not worth it.
    """
    if len(text) <= limit:
        return text
    if limit <= 1:
        return "\u2026"[:limit]
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= (limit - 1) // 2 and not text[limit - 1].isspace():
        cut = cut[:space]
    return cut.rstrip(" ,;:.-\u2013\u2014") + "\u2026"


def _add_strings(value: Any, label: str, add: Callable[[str, str], Any], depth: int = 0) -> None:
    """``add(text, label)`` every non-empty string inside a JSON value (highlights and
    outline vary in shape). A dict inside a list is read in the same call: one call per
    list, not one per item (outline items are small dicts)."""
    if type(value) is str:
        if value:
            add(value, label)
        return
    if depth >= 8:
        return
    if type(value) is dict:
        value = value.values()
    elif type(value) is not list:
        return
    for v in value:
        cls = type(v)
        if cls is str:
            if v:
                add(v, label)
        elif cls is dict:
            if depth < 7:  # the depth limit of _add_strings(v, label, add, depth + 1)
                for w in v.values():
                    wcls = type(w)
                    if wcls is str:
                        if w:
                            add(w, label)
                    elif wcls is dict or wcls is list:
                        _add_strings(w, label, add, depth + 2)
        elif cls is list:
            _add_strings(v, label, add, depth + 1)


# -- the call's text, scanned once -------------------------------------------------------
@dataclass(slots=True)
class _Hits:
    """Where each keyword signal first matched, and which competitors were named."""

    first: dict[str, tuple[int, int]] = field(default_factory=dict)
    competitors: list[str] = field(default_factory=list)
    competitor_span: tuple[int, int] | None = None


class _Text:
    """All conversational text of a call joined once, so every keyword list costs one regex pass.

    The blob starts with a separator too: the scanner consumes the character before a
    keyword, and this one lets a keyword start the text, with match offsets that are
    blob offsets (no second copy of the text with a leading space).
    """

    __slots__ = ("blob", "starts", "labels")

    def __init__(self, segments: dict[str, str]) -> None:
        """``segments``: text -> label of its first occurrence, in the order evidence is
        preferred (highlights and outline often repeat the brief: same text, same hits,
        so each distinct text is joined once)."""
        parts = list(segments)
        self.labels = list(segments.values())
        self.starts = starts = []
        pos = 1
        for text in parts:
            starts.append(pos)
            pos += len(text) + 1  # the text and its separator
        self.blob = _SEGMENT_SEP.join(["", *parts]) if parts else ""

    def evidence(self, start: int, end: int) -> str:
        """``label: "…snippet…"`` around a match, within its own segment, cut at spaces."""
        starts = self.starts
        blob = self.blob
        i = bisect_right(starts, start) - 1
        seg_start = starts[i]
        seg_end = starts[i + 1] - 1 if i + 1 < len(starts) else len(blob)
        a = start - _SNIPPET_WIDTH
        if a > seg_start:  # cut inside the segment: at a space, marked with an ellipsis
            space = blob.find(" ", a, start)
            if space != -1:
                a = space + 1
            lead = "\u2026"
        else:
            a, lead = seg_start, ""
        b = end + _SNIPPET_WIDTH
        if b < seg_end:
            space = blob.rfind(" ", end, b)
            if space != -1:
                b = space
            trail = "\u2026"
        else:
            b, trail = seg_end, ""
        return f'{self.labels[i]}: "{lead}{_clean(blob[a:b])}{trail}"'

    def scan(self, cfg: ResolvedConfig) -> _Hits:
        """One regex pass over the text; each distinct matched string is classified once per config."""
        hits = _Hits()
        blob = self.blob
        pattern = cfg.scan_pattern
        if not blob or pattern is None:
            return hits
        low = blob.lower()
        # lower() changes the length of a few characters (e.g. U+0130): then offsets would drift
        if len(low) != len(blob):
            pattern = _scan_regex_ci(cfg.scan_keywords)
            low = blob
        # Only the first occurrence of each distinct keyword can be first for a signal, so a
        # repeated keyword costs one set lookup; a new one is classified once per config (and
        # matches come in order of position, so the first span seen for a signal is its earliest).
        first = hits.first
        competitors = hits.competitors
        cache = cfg.match_cache
        seen: set[str] = set()
        group = 1 if pattern.groups == 1 else 0  # type: ignore[union-attr]  # 0: whichever group matched
        for m in pattern.finditer(low):  # type: ignore[union-attr]
            g = group or m.lastindex or 0
            text = m[g]
            if text in seen:
                continue
            seen.add(text)
            found = cache.get(text)
            if found is None:
                found = _classify(text, cfg)
                if len(cache) >= _MATCH_CACHE_MAX:
                    cache.clear()
                cache[text] = found
            signals, competitor = found
            span = None
            for name in signals:
                if name not in first:
                    if span is None:
                        span = m.span(g)
                    first[name] = span
            if competitor is not None:
                if hits.competitor_span is None:
                    hits.competitor_span = span or m.span(g)
                if competitor not in competitors:
                    competitors.append(competitor)
        return hits


def _classify(matched: str, cfg: ResolvedConfig) -> tuple[tuple[str, ...], str | None]:
    """Which signals a matched string belongs to. A phrase can feed several signals
    ("over budget" is a pricing objection *and* budget talk), so each list's own
    pattern is searched inside the match."""
    text = _clean(matched).replace("\u2019", "'")
    signals = tuple(name for name in _SIGNALS
                    if (p := cfg.signals[name].pattern) is not None and p.search(text) is not None)
    competitor = None
    if cfg.competitor_pattern is not None:
        m = cfg.competitor_pattern.search(text)
        if m is not None:
            competitor = cfg.competitor_names.get(m.group().lower(), m.group())
    return signals, competitor


def _tracker_signals(tracker_name: str, tracker_type: str, cfg: ResolvedConfig) -> tuple[str, ...]:
    """Signals whose tracker keywords occur in a tracker's lower-cased "name type" (cached
    on (name, type): the same few tracker names come back on every call of a workspace)."""
    key = (tracker_name, tracker_type)
    found = cfg.tracker_cache.get(key)
    if found is None:
        hay = f"{tracker_name} {tracker_type}".lower()
        names = [name for name, signal in cfg.signals.items() if any(k in hay for k in signal.tracker_keywords)]
        if any(k in hay for k in cfg.competitor_tracker_keywords):
            names.append("competitor")
        found = tuple(names)
        if len(cfg.tracker_cache) >= _MATCH_CACHE_MAX:
            cfg.tracker_cache.clear()
        cfg.tracker_cache[key] = found
    return found


# -- the call, read once -----------------------------------------------------------------
@dataclass(slots=True)
class _Call:
    """The parts of a (masked) call the rules need, extracted once."""

    metadata: dict[str, Any]
    content: dict[str, Any] | None
    parties: list[dict[str, Any]]
    externals: list[dict[str, Any]]
    internals: int
    tracker_evidence: dict[str, str]  # signal -> evidence from the first hit tracker matching it
    action_items: int
    text: _Text
    hits: _Hits
    talk_ratio: float | None
    talk_ratio_source: str
    stats: dict[str, Any]  # interactionStats by lower-cased name
    questions: dict[str, int | None]


def _read_call(call: Mapping[str, Any], cfg: ResolvedConfig) -> _Call:
    """Extract, once, everything the rules read; every block may be missing or malformed."""
    metadata = _d(call.get("metaData"))
    content_raw = call.get("content")
    content = content_raw if type(content_raw) is dict else None
    c = content or {}
    parties = [p for p in _l(call.get("parties")) if type(p) is dict]

    # parties: dedupe (Gong may list one person once per joining method)
    seen: set[tuple[Any, ...]] = set()
    externals: list[dict[str, Any]] = []
    internals = 0
    affiliation_by_speaker: dict[str, str] = {}
    affiliation_by_user: dict[str, str] = {}
    for p in parties:
        aff = p.get("affiliation")
        aff = aff.lower() if type(aff) is str else ""
        sid = p.get("speakerId")
        if type(sid) is not str or not sid:  # _key, inlined for the usual non-empty string
            sid = _key(sid)
        pid, email, name = p.get("id"), p.get("emailAddress"), p.get("name")
        if type(pid) is not str or not pid:
            pid = _key(pid)
        identity = (pid, email if type(email) is str else "", name if type(name) is str else "", sid)
        if identity == (None, "", "", None) or identity not in seen:
            seen.add(identity)
            if aff == "external":
                externals.append(p)
            elif aff == "internal":
                internals += 1
        if sid is not None and sid not in affiliation_by_speaker:
            affiliation_by_speaker[sid] = aff
        uid = p.get("userId")
        if uid is not None and (type(uid) is not str or not uid):
            uid = _key(uid)
        if uid is not None and uid not in affiliation_by_user:
            affiliation_by_user[uid] = aff

    # text segments, in the order evidence is preferred
    segments: dict[str, str] = {}  # text -> label of its first occurrence
    add_segment = segments.setdefault
    brief = c.get("brief")
    if type(brief) is str and brief:
        add_segment(brief, "brief")
    for kp in _l(c.get("keyPoints")):
        text = kp.get("text") if type(kp) is dict else kp
        if type(text) is str and text:
            add_segment(text, "keyPoints")
    _add_strings(c.get("highlights"), "highlights", add_segment)
    _add_strings(c.get("outline"), "outline", add_segment)
    action_items = 0
    for item in _l(_d(c.get("pointsOfInterest")).get("actionItems")):
        if item:
            action_items += 1
        snippet = item.get("snippet") if type(item) is dict else item
        if type(snippet) is str and snippet:
            add_segment(snippet, "actionItems")
    tracker_evidence: dict[str, str] = {}
    for t in _l(c.get("trackers")):
        if type(t) is not dict:
            continue
        count = t.get("count")
        if type(count) is not int:  # _num, inlined for the usual int
            count = _num(count)
        active = count > 0 if count is not None else bool(_l(t.get("occurrences")))
        # Gong lists every configured tracker: only a hit (count > 0) is evidence
        phrases = t.get("phrases")
        for item in phrases if type(phrases) is list else ():
            if type(item) is str:
                if active and item:
                    add_segment(item, "trackers")
            elif type(item) is dict:
                phrase = item.get("phrase")
                if type(phrase) is str and phrase:
                    phrase_count = item.get("count")
                    if type(phrase_count) is not int:
                        phrase_count = _num(phrase_count)
                    if phrase_count > 0 if phrase_count is not None else active:
                        add_segment(phrase, "trackers")
        if active:
            name, ttype = t.get("name"), t.get("type")
            name = name if type(name) is str else ""
            ttype = ttype if type(ttype) is str else ""
            for signal in _tracker_signals(name, ttype, cfg):
                if signal not in tracker_evidence:
                    times = f" {_fmt(count)} time(s)" if count is not None else ""
                    tracker_evidence[signal] = f'tracker "{name or ttype}" hit{times}'
    for topic in _l(c.get("topics")):
        if type(topic) is dict:
            name = topic.get("name")
            if type(name) is str and name:
                duration = topic.get("duration")
                if type(duration) is not int:
                    duration = _num(duration)
                if duration is None or duration > 0:
                    add_segment(name, "topics")
    for comment in _l(_d(call.get("collaboration")).get("publicComments")):
        text = comment.get("comment") if type(comment) is dict else comment
        if type(text) is str and text:
            add_segment(text, "comments")
    text_index = _Text(segments)

    # talk ratio: speakers' talk time by affiliation, else Gong's own "Talk Ratio" stat
    interaction = _d(call.get("interaction"))
    stats: dict[str, Any] = {}
    for stat in _l(interaction.get("interactionStats")):
        if type(stat) is dict:
            name = stat.get("name")
            name = name.strip().lower() if type(name) is str else ""
            if name and name not in stats:
                stats[name] = stat.get("value")
    internal_time = total_time = 0.0
    for sp in _l(interaction.get("speakers")):
        if type(sp) is not dict:
            continue
        talk = sp.get("talkTime")
        if type(talk) is not float or not math.isfinite(talk):  # _num, inlined for the usual float
            talk = _num(talk)
        if talk is None or talk < 0:
            continue
        sid, uid = sp.get("id"), sp.get("userId")
        if type(sid) is not str or not sid:
            sid = _key(sid)
        if uid is not None:
            uid = _key(uid)
        aff = affiliation_by_speaker.get(sid) if sid is not None else None
        if aff is None and uid is not None:
            # a speaker with a Gong userId is a Gong user, i.e. internal, even without a party
            aff = affiliation_by_user.get(uid, "internal")
        total_time += talk
        if aff == "internal":
            internal_time += talk
    talk_ratio: float | None = None
    source = ""
    if total_time > 0:
        talk_ratio, source = internal_time / total_time, "speakers' talk time"
    else:
        value = _num(stats.get("talk ratio"))
        if value is not None and 1 < value <= 100:
            value /= 100  # some exports give a percentage
        if value is not None and 0 <= value <= 1:
            talk_ratio, source = float(value), 'interactionStats "Talk Ratio"'

    q = _d(interaction.get("questions"))
    questions: dict[str, int | None] = {}
    for out_key, in_key in (("company", "companyCount"), ("non_company", "nonCompanyCount")):
        v = _num(q.get(in_key))
        questions[out_key] = int(v) if v is not None and v >= 0 else None

    # positional, in field order: 13 keyword arguments cost more than building the object
    return _Call(metadata, content, parties, externals, internals, tracker_evidence, action_items, text_index,
                 text_index.scan(cfg), talk_ratio, source, stats, questions)


# -- rules -------------------------------------------------------------------------------
def _cap(text: str) -> str:
    return text if len(text) <= _EVIDENCE_MAX else truncate(text, _EVIDENCE_MAX)


def _signal(call: _Call, name: str) -> str | None:
    """Evidence for a keyword signal: the first text match, else the first hit tracker."""
    span = call.hits.first.get(name)
    if span is not None:
        evidence = call.text.evidence(*span)
        return evidence if len(evidence) <= _EVIDENCE_MAX else truncate(evidence, _EVIDENCE_MAX)
    return call.tracker_evidence.get(name)


def _competitor(call: _Call) -> str | None:
    parts: list[str] = []
    hits = call.hits
    if hits.competitor_span is not None:
        parts.append(f"{', '.join(hits.competitors)} mentioned; " + call.text.evidence(*hits.competitor_span))
    tracker = call.tracker_evidence.get("competitor")
    if tracker:
        parts.append(tracker)
    return _cap("; ".join(parts)) if parts else None


def _has_senior_title(externals: list[dict[str, Any]], cfg: ResolvedConfig) -> bool:
    """Whether an External party's title matches ``senior_title_keywords`` and not an
    exclusion. The trie scanner finds a title iff ``senior_title_pattern`` does (a test
    holds them to it); the flat pattern tries 35 alternatives at every character, which
    cost microseconds per title that names no senior role."""
    senior = cfg.senior_title_scan
    if senior is None:
        return False
    exclude = cfg.senior_title_exclude_pattern
    for p in externals:
        title = p.get("title")
        if (type(title) is str and title and senior.search(" " + title) is not None
                and (exclude is None or exclude.search(title) is None)):
            return True
    return False


def _risks(call: _Call, cfg: ResolvedConfig) -> list[tuple[str, str]]:
    """(code, evidence) for every risk that fires, in RISK_CODES order (the order of the
    checks below); a rule whose block is missing stays silent."""
    found: list[tuple[str, str]] = []
    md = call.metadata
    content = call.content

    if content is not None:
        outcome = _d(content.get("callOutcome"))
        category = _s(outcome.get("category")).strip()
        if category and category.casefold() in cfg.negative_outcomes:
            name = _clean(_s(outcome.get("name")))
            detail = f" ({name})" if name and name != category else ""
            found.append(("negative_outcome", _cap(f'call outcome "{category}"{detail}')))
        if not call.action_items and _signal(call, "next_step") is None:
            found.append(("no_next_steps", "no action items and no next-step language in the call content"))

    internal_meeting = _s(md.get("scope")).lower() == "internal"
    if call.parties and not internal_meeting:  # no buyer in an internal meeting
        if not _has_senior_title(call.externals, cfg):
            n = len(call.externals)
            found.append(("no_decision_maker", "no External party on the call" if n == 0 else
                          f"{n} External part{'y' if n == 1 else 'ies'}, none with a senior title"))

    pricing = _signal(call, "pricing_objection")
    if pricing:
        found.append(("pricing_objection", pricing))

    competitor = _competitor(call)
    if competitor:
        found.append(("competitor_mentioned", competitor))

    labels = cfg.threshold_labels
    if call.talk_ratio is not None and call.talk_ratio > cfg.rep_dominated_talk_ratio and not internal_meeting:
        found.append(("rep_dominated", f"internal talk ratio {call.talk_ratio:.2f} > "
                                       f"{labels['rep_dominated']} (from {call.talk_ratio_source})"))

    monologue = _num(call.stats.get("longest monologue"))
    if monologue is not None and monologue > cfg.long_monologue_seconds:
        found.append(("long_monologue", f"longest monologue {_fmt(monologue)} s > {labels['long_monologue']} s"))

    duration = _num(md.get("duration"))
    if duration is not None and 0 <= duration < cfg.short_call_seconds:
        found.append(("short_call", f"duration {_fmt(duration)} s < {labels['short_call']} s"))

    return found


def _context_timeline(call_doc: Mapping[str, Any], fields: frozenset[str]) -> str | None:
    """A CRM date such as Opportunity CloseDate also counts as a defined timeline."""
    if not fields:
        return None
    contexts = call_doc.get("context")
    for ctx in contexts if type(contexts) is list else ():
        if type(ctx) is not dict:
            continue
        objects = ctx.get("objects")
        for obj in objects if type(objects) is list else ():
            if type(obj) is not dict:
                continue
            fields_ = obj.get("fields")
            for f in fields_ if type(fields_) is list else ():
                if type(f) is not dict:
                    continue
                name = f.get("name")
                if type(name) is not str or name.casefold() not in fields:  # (fields holds no "")
                    continue
                value = f.get("value")
                if value not in (None, "", [], {}):
                    shown = value if type(value) is str else json.dumps(value, ensure_ascii=False)
                    where = " ".join(x for x in (_s(ctx.get("system")), _s(obj.get("objectType"))) if x)
                    return _cap(f"{where + ' ' if where else ''}{name} = {_clean(shown)}")
    return None


_OPPORTUNITY_SIGNALS: tuple[tuple[str, str], ...] = (
    ("expansion_interest", "expansion"), ("budget_discussed", "budget"),
    ("timeline_defined", "timeline"), ("champion_identified", "champion"),
)


def _opportunities(call: _Call, call_doc: Mapping[str, Any], cfg: ResolvedConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for code, signal in _OPPORTUNITY_SIGNALS:
        evidence = _signal(call, signal)
        if evidence is None and code == "timeline_defined":
            evidence = _context_timeline(call_doc, cfg.timeline_context_fields)
        if evidence is not None:
            out.append((code, evidence))
    n = len(call.externals)
    if n >= cfg.multi_threaded_min_external_parties:
        out.append(("multi_threaded", f"{n} External parties on the call"))
    return out


def _summary(call: _Call, risks: list[tuple[str, str]], cfg: ResolvedConfig) -> str:
    """Brief + key points, then outcome and top risks; the tail is never cut for the body."""
    c = call.content or {}
    limit = cfg.summary_max_chars
    brief = _clean_prefix(_s(c.get("brief")), limit)
    points = []
    max_points = cfg.summary_max_key_points
    if max_points:
        for kp in _l(c.get("keyPoints")):
            text = kp.get("text") if type(kp) is dict else kp
            text = _clean(text).rstrip(".;") if type(text) is str else ""
            if text:
                points.append(text)
                if len(points) >= max_points:
                    break
    key_points = f"Key points: {'; '.join(points)}." if points else ""
    tail: list[str] = []
    outcome = _d(c.get("callOutcome"))
    category = _clean(_s(outcome.get("category")))
    name = _clean(_s(outcome.get("name")))
    if category or name:
        label = category or name
        tail.append(f"Outcome: {label}" + (f" ({name})" if name and category and name != category else "") + ".")
    if risks and cfg.summary_max_risks:
        top = sorted([code for code, _ in risks], key=cfg.risk_order.__getitem__)[: cfg.summary_max_risks]
        labels = cfg.risk_labels
        tail.append("Top risks: " + ", ".join([labels[code] for code in top]) + ".")
    suffix = " ".join(tail)
    if not (brief or key_points or suffix):
        return "No brief, key points, outcome or risks recorded for this call."
    room = limit - len(suffix) - 1 if suffix else limit
    if room < 40:  # a pathological outcome name: cut everything together
        return truncate(" ".join(x for x in (brief, key_points, suffix) if x), limit)
    if brief and key_points and len(brief) + 1 + len(key_points) > room:
        brief = truncate(brief, max(room // 2, room - len(key_points) - 1))
        key_points = truncate(key_points, room - len(brief) - 1)
    body = truncate(f"{brief} {key_points}" if brief and key_points else brief or key_points, room)
    return truncate(f"{body} {suffix}" if body and suffix else body or suffix, limit)


# next-best-action order: priority, then risks before opportunities, then code order
_ACTION_RANK: dict[str, tuple[int, int, int]] = {
    code: (priority, 0 if code in RISK_CODES else 1, _CODE_ORDER[code]) for code, (priority, _) in _ACTIONS.items()
}


def _next_best_actions(risks: list[tuple[str, str]], opportunities: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Risks first within a priority; after a negative outcome there is no deal to grow,
    so opportunity actions are dropped. (Each code fires at most once, so the codes sort
    by a precomputed rank and key the evidence.)"""
    evidence = dict(risks)
    if "negative_outcome" not in evidence:
        evidence.update(opportunities)
    actions = _ACTIONS
    out = []
    for code in sorted(evidence, key=_ACTION_RANK.__getitem__):
        priority, action = actions[code]
        reason = f"{code}: {evidence[code]}"
        if len(reason) > _EVIDENCE_MAX:
            reason = truncate(reason, _EVIDENCE_MAX)
        out.append({"action": action, "reason": reason, "priority": priority})
    return out


def compute_enrichment(masked_call: Mapping[str, Any], cfg: ResolvedConfig, enriched_at: str) -> dict[str, Any]:
    """The ``enrichment`` object of one call. Give it the *masked* call: evidence quotes it."""
    call = _read_call(masked_call, cfg)
    found_risks = _risks(call, cfg)
    found_opportunities = _opportunities(call, masked_call, cfg)
    severity = cfg.severity
    weight = cfg.weight
    score = 0
    risks = []
    for code, evidence in found_risks:
        risks.append({"code": code, "severity": severity[code], "evidence": evidence})
        score += weight[code]
    duration = call.metadata.get("duration")
    monologue = call.stats.get("longest monologue")
    return {
        "risk_score": min(100, score),
        "risk_indicators": risks,
        "opportunities": [{"code": code, "evidence": evidence} for code, evidence in found_opportunities],
        "executive_summary": _summary(call, found_risks, cfg),
        "next_best_actions": _next_best_actions(found_risks, found_opportunities),
        "metrics": {
            "talk_ratio": round(call.talk_ratio, 3) if call.talk_ratio is not None else None,
            "longest_monologue_seconds": None if monologue is None else _plain(_num(monologue)),
            "questions": call.questions,
            "external_parties": len(call.externals),
            "internal_parties": call.internals,
            "duration_seconds": None if duration is None else _plain(_num(duration)),
        },
        "enriched_at": enriched_at,
        "rules_version": RULES_VERSION,
    }


# -- entry points ------------------------------------------------------------------------
def _timestamp(now: datetime | None) -> str:
    """ISO-8601 UTC with milliseconds and a Z; a naive ``now`` is taken as UTC."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _enrich(call: Mapping[str, Any], cfg: ResolvedConfig, enriched_at: str) -> dict[str, Any]:
    if type(call) is not dict and not isinstance(call, Mapping):  # (typing.Mapping's check is slow)
        raise TypeError(f"a Gong call must be a mapping, got {type(call).__name__}")
    masked = cfg.masker.mask_document(call)
    masked.pop("enrichment", None)  # a re-run replaces, never merges with, an old enrichment
    masked["enrichment"] = compute_enrichment(masked, cfg, enriched_at)
    return masked


def enrich_call(call: dict[str, Any], config: ResolvedConfig, now: datetime) -> dict[str, Any]:
    """One enriched document: a masked deep copy of ``call`` plus its ``enrichment``.

    ``config`` may also be a plain mapping (merged over DEFAULT_CONFIG like in ``derive``).
    """
    return _enrich(call, resolve_config(config), _timestamp(now))


def derive(documents: list[dict[str, Any]], config: Mapping[str, Any] | None = None,
           now: datetime | None = None) -> list[dict[str, Any]]:
    """Batch entry point: returns one enriched document per input document, same order.

    Each output is a masked deep copy of the input (``_meta`` kept verbatim, ``media``
    dropped) plus ``enrichment``; inputs are never mutated. ``now`` (default: the
    current UTC time) becomes ``enrichment.enriched_at`` for the whole batch.
    """
    cfg = resolve_config(config)
    enriched_at = _timestamp(now)
    with cycle_collector_paused():  # sophia_tasks.gcpause: ~13% of derive's CPU otherwise
        return [_enrich(doc, cfg, enriched_at) for doc in documents]
