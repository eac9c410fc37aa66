"""The rules on one masked call: risk indicators, opportunities, executive summary and next best
actions, each carrying the evidence that explains it."""
from __future__ import annotations

import json
from typing import Any, Mapping

from sophia_tasks.derivations.gong_enrichment.calls import _Call, _read_call
from sophia_tasks.derivations.gong_enrichment.config import ResolvedConfig
from sophia_tasks.derivations.gong_enrichment.defaults import _CODE_ORDER, RISK_CODES, RULES_VERSION
from sophia_tasks.derivations.gong_enrichment.values import (
    _clean,
    _clean_prefix,
    _d,
    _fmt,
    _l,
    _num,
    _plain,
    _s,
    truncate,
)

_EVIDENCE_MAX = 240

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
        # Gong names the outcome ("Closed Lost") and files it in a category ("Negative"): either counts.
        category = _s(outcome.get("category")).strip()
        name = _clean(_s(outcome.get("name")))
        if category and category.casefold() in cfg.negative_outcomes:
            detail = f" ({name})" if name and name != category else ""
            found.append(("negative_outcome", _cap(f'call outcome "{category}"{detail}')))
        elif name and name.casefold() in cfg.negative_outcomes:
            detail = f" ({category})" if category else ""
            found.append(("negative_outcome", _cap(f'call outcome "{name}"{detail}')))
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
