"""A call's conversational text, joined once and scanned in one regex pass; each distinct matched
string is classified once per config, and evidence is a snippet cut around the first match."""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from sophia_tasks.derivations.gong_enrichment.config import ResolvedConfig
from sophia_tasks.derivations.gong_enrichment.defaults import _SIGNALS
from sophia_tasks.derivations.gong_enrichment.patterns import _scan_regex_ci
from sophia_tasks.derivations.gong_enrichment.values import _clean

_MATCH_CACHE_MAX = 20_000
_SNIPPET_WIDTH = 60
_SEGMENT_SEP = "\x00"  # joins text segments; matches no keyword pattern, so no match spans two segments


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
