"""Keyword lists compiled to regexes: whole words, case-insensitive, and one trie-shaped scanner
for all of them, so a call's text costs one regex pass however many keywords the config holds."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Iterable

from sophia_tasks.derivations.gong_enrichment.defaults import ConfigError

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _edge(ch: str) -> str:
    r"""How a keyword that begins or ends with ``ch`` meets its neighbours.

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
