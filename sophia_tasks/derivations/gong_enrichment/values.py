"""Small, total helpers (never raise on odd input): Gong exports vary in shape and type, so every
rule reads values through these, and evidence text is cleaned and cut the same way everywhere."""
from __future__ import annotations

import math
from typing import Any, Callable


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
