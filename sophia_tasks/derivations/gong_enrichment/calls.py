"""A Gong call read once into what the rules need: parties, text, trackers, talk time. Every block
may be missing or malformed, so nothing here raises on odd input."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from sophia_tasks.derivations.gong_enrichment.config import ResolvedConfig
from sophia_tasks.derivations.gong_enrichment.text import _Hits, _Text, _tracker_signals
from sophia_tasks.derivations.gong_enrichment.values import _add_strings, _d, _fmt, _key, _l, _num


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
