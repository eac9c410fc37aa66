"""PII masking for documents (sales calls, CRM deals).

Why it exists: the enriched calls and masked deals go to Redis, PostgreSQL and Snowflake, where many
people and tools can read them. Emails and phone numbers of buyers must not travel
there, and the ``media`` block holds signed URLs that let anyone download the
recording for 8 hours.

What it does (documented for data engineers in ``docs/enrichment.md``):

* Email addresses anywhere in a string become ``***@domain`` (the domain is kept:
  account-level analytics need it, the person is gone).
* Phone numbers become ``***-***-**NN`` keeping the last ``keep_last_digits``
  digits (default 2, may be 0 or 1). A phone needs a phone *shape*: a leading ``+``
  followed by digits, or at least two digit groups joined by separators
  (space, ``.``, ``-``, ``/``, parentheses), with 7 digits or more in total.
  Plain digit runs (call ids, ``20260101``), ISO timestamps and dates, times,
  amounts such as ``$40,000``, decimals, dotted thousands (``1.234.567``), IPv4
  addresses and year ranges (``2025-2026``) are left alone.
* Values of fields that *are* contact data (``emailAddress``, ``phoneNumber``... and
  CRM ``{name: "Phone", value: ...}`` pairs) are masked whatever their shape.
* The top-level ``_meta`` (pipeline metadata) is copied unchanged and never masked.
* The ``media`` block is dropped entirely.

The walk builds a new document (it is the deep copy), so the input is never mutated.
It is the hot loop of the derivation: strings are screened with cheap ``str`` methods
(letters and digits only) and a byte-level test (``may_hold_phone``) before any regex
runs, and inside a string only positions in phone-ish runs are tried (``_phone_edits``;
``mask_text_reference`` is the plain regex definition the fast code is tested against).
Regex calls are few on purpose: inside the walk, with its large working set, each one
costs about a microsecond, so where plain ``str``/``bytes`` operations give the same
answer (digit groups of a phone match, the next phone-ish run of an ASCII text) they
are used instead.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

__all__ = [
    "DEFAULT_EMAIL_FIELDS",
    "DEFAULT_PHONE_FIELDS",
    "EMAIL_RE",
    "PHONE_OR_DATE_RE",
    "PHONEISH_LEAD_BYTES",
    "PiiMasker",
    "DEFAULT_MASKER",
    "mask_document",
    "mask_text",
    "may_hold_phone",
]

# Field names whose values are contact data, masked whole whatever their shape. Each name
# also matches its lower-case, upper-case and first-letter-swapped variants (Email, EMAIL).
DEFAULT_EMAIL_FIELDS: tuple[str, ...] = ("emailAddress", "email", "email_address")
DEFAULT_PHONE_FIELDS: tuple[str, ...] = (
    "phoneNumber", "phone", "phone_number", "mobile", "mobilePhone", "HomePhone", "OtherPhone", "Fax",
)

# Characters allowed in an email local part (RFC 5322 atext plus dot, Unicode letters via \w).
_LOCAL = r"[\w.!#$%&'*+/=?^`{|}~-]"
# The negative lookbehind makes every attempt start at the beginning of a run, which
# keeps the scan linear even on long runs of word characters without an '@'.
_DOMAIN = r"[\w-]+(?:\.[\w-]+)+"
EMAIL_RE = re.compile(rf"(?<!{_LOCAL}){_LOCAL}+@({_DOMAIN})")
_DOMAIN_RE = re.compile(_DOMAIN)  # fullmatch: what EMAIL_RE.fullmatch("x@" + domain) accepts

_SEP = r"[ \u00a0.\-/\u2010-\u2015]"
_GROUP = rf"(?:(?:{_SEP}{{1,3}}|(?<=\)))\(?\d+\)?)"
# Things that look like digit groups but are dates: tried first at each position, kept verbatim.
# ISO-8601 date, optionally with time, fraction and offset.
_ISO = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
_ISO_DATETIME = re.compile(_ISO)


def _iso_shapes() -> frozenset[bytes]:
    """The usual ISO timestamps as shapes: ASCII digits as 0x00 (see ``_ISO_SHAPE_BYTES``).

    Every shape is a string ``_ISO_DATETIME`` fullmatches with ASCII digits (checked
    below), so a string with one of these shapes is a lone ISO timestamp without a regex
    call; any other string still goes to the regex (fractions of any length, other digits).
    """
    d = "\x00"
    date = f"{d * 4}-{d * 2}-{d * 2}"
    seconds = ["", f":{d * 2}"] + [f":{d * 2}{mark}{d * n}" for mark in ".," for n in (1, 3, 6)]
    offsets = ["", "Z"] + [f"{sign}{d * 2}{minutes}" for sign in "+-" for minutes in ("", f":{d * 2}", d * 2)]
    shapes = {date}
    for sep in "T ":
        shapes.update(f"{date}{sep}{d * 2}:{d * 2}{sec}{off}" for sec in seconds for off in offsets)
    assert all(_ISO_DATETIME.fullmatch(shape.replace(d, "7")) for shape in shapes)
    return frozenset(shape.encode() for shape in shapes)


# bytes.translate table for _ISO_SHAPES: ASCII digits to 0x00, a literal 0x00 to 0x01, the rest kept
_ISO_SHAPE_BYTES = bytes(0 if 0x30 <= b <= 0x39 else 1 if b == 0 else b for b in range(256))
_ISO_SHAPES = _iso_shapes()
_KEEP = (
    r"(?P<keep>" + _ISO +
    # 25/11/2026, 11-25-26, 25.11.2026
    r"|(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|[12]\d|3[01])[-/.](?:\d{4}|\d{2})"
    # 2026/11/25, 2026.11.25
    r"|\d{4}[/.](?:0?[1-9]|1[0-2])[/.](?:0?[1-9]|[12]\d|3[01])"
    r")(?!\d|[.\-/]\d)"
)
_PHONE = (
    r"(?P<phone>"
    r"\+[ \u00a0]?\(?\d+\)?" + _GROUP + r"*"  # +14155550132, +1 (415) 555-0132
    r"|\(?\d+\)?" + _GROUP + r"+"  # (415) 555-0132, 415.555.0132, 020 7946 0958
    r")(?!\w|[.\-/\u2010-\u2015]\w)"
)
# Not inside a word, a number, an email or a path.
PHONE_OR_DATE_RE = re.compile(rf"(?<![\w@+.\-/)]){_KEEP}|(?<![\w@+.\-/)]){_PHONE}")
# Maximal runs of phone-ish characters. Every phone or date match starts inside one,
# and the pattern starts with a character class, so the scan skips text quickly in C.
_RUN = re.compile(r"[\d(+][\d()+ \u00a0.\-/\u2010-\u2015]{7,}")
# Inside a run, a match may only start where the lookbehind of PHONE_OR_DATE_RE allows:
# at the run start, or after one of these characters.
_RESTART_AFTER = frozenset(" \u00a0(\u2010\u2011\u2012\u2013\u2014\u2015")
_DIGITS = re.compile(r"\d+")
_NOT_SEPARATOR = re.compile(r"[\d()]")
_YEAR = re.compile(r"(?:19|20)\d\d")
_LOCAL_RUN_BACK = re.compile(rf"{_LOCAL}+")

# UTF-8 lead bytes of every character a phone match can contain beyond ASCII: the
# no-break space, the dashes U+2010-2015 and every Unicode decimal digit (\d). A test
# recomputes this set from the whole Unicode range.
PHONEISH_LEAD_BYTES = frozenset({0xC2, 0xD9, 0xDB, 0xDF, 0xE0, 0xE1, 0xE2, 0xEA, 0xEF, 0xF0})


def _phoneish_table() -> bytes:
    """bytes.translate table: '0' for every byte that can be part of a phone-ish character
    (ASCII digits and separators, continuation bytes, the lead bytes above), 'x' otherwise."""
    table = bytearray(b"x" * 256)
    for byte in b"0123456789()+ .-/":
        table[byte] = 0x30
    for byte in range(0x80, 0xC0):
        table[byte] = 0x30
    for byte in PHONEISH_LEAD_BYTES:
        table[byte] = 0x30
    return bytes(table)


_PHONEISH_BYTES = _phoneish_table()


def may_hold_phone(text: str) -> bool:
    """False proves ``text`` holds no phone: a phone match is 8+ consecutive phone-ish
    characters, whose UTF-8 bytes all translate to '0'. One encode and one translate,
    in C, instead of a regex over a long brief."""
    try:
        encoded = text.encode()  # the default codec has a fast path; named error handlers do not
    except UnicodeEncodeError:  # a lone surrogate
        encoded = text.encode("utf-8", "surrogatepass")
    # find(), not ``in``: ``bytes.__contains__`` first tries the needle as an int and
    # raises (and clears) a formatted TypeError on every call, which cost more than the test
    return encoded.translate(_PHONEISH_BYTES).find(b"00000000") != -1


_RUN_FIRST = frozenset("0123456789(+")  # the ASCII characters a _RUN match can start with


def _next_run(text: str, pos: int, encoded: bytes | None, phoneish: bytes | None) -> tuple[int, int] | None:
    """The span of ``_RUN.search(text, pos)``, or None.

    ``encoded``: ``text`` as UTF-8 (strict: no lone surrogates), ``phoneish``: those bytes
    translated by ``_PHONEISH_BYTES`` (both None: the regex alone). A ``_RUN`` match is 8+
    characters of its repeated class, all of whose bytes translate to '0', so the regex
    need not run where there are no 8 '0's: from the first ones it starts, and when there
    are none after ``pos`` it does not run at all (inside the walk each regex call costs
    about a microsecond; the text after the last phone of a brief is the usual case).

    For ASCII text, byte and character offsets agree and the '0's are exactly the
    characters of the repeated class, so a run starting with one of ``_RUN_FIRST`` is the
    match itself, ending at the next 'x' (greedy): most runs (ids in URLs, phone numbers)
    need no regex call.
    """
    if phoneish is not None:
        ascii_ = len(encoded) == len(text)  # type: ignore[arg-type]
        byte_pos = pos if ascii_ or not pos else len(text[:pos].encode())
        byte_pos = phoneish.find(b"00000000", byte_pos)
        if byte_pos == -1:
            return None
        if ascii_:
            pos = byte_pos
            if text[pos] in _RUN_FIRST:
                end = phoneish.find(b"x", pos + 8)
                return pos, len(text) if end == -1 else end
        else:  # the character that holds that byte: no match starts between pos and it
            pos = len(encoded[:byte_pos].decode("utf-8", "ignore"))  # type: ignore[index]
    m = _RUN.search(text, pos)
    return None if m is None else m.span()


# The characters of a phone match besides its digits (see _PHONE): translated to spaces, the
# digit groups are what str.split() returns, and the separators are these minus the parentheses.
_PHONE_NON_DIGITS = "+() \u00a0.-/\u2010\u2011\u2012\u2013\u2014\u2015"
_PHONE_TO_SPACES = str.maketrans({ch: " " for ch in _PHONE_NON_DIGITS})
_PHONE_SEPARATORS = frozenset(_PHONE_NON_DIGITS) - {"(", ")"}
# str.translate deletes these: what is left of an ASCII text is its digits, like "".join(_DIGITS.findall(text))
_ASCII_NON_DIGITS = str.maketrans({ch: None for ch in map(chr, range(128)) if not "0" <= ch <= "9"})


def _is_phone(candidate: str, groups: list[str] | None = None, separators: set[str] | None = None) -> bool:
    """Decide on a phone-shaped candidate; False keeps it verbatim (not PII). ``groups``:
    ``_DIGITS.findall(candidate)``, and ``separators``: the set of its characters other than
    digits and parentheses, if the caller has them already."""
    if groups is None:
        groups = _DIGITS.findall(candidate)
    n_digits = sum(map(len, groups))
    if n_digits < 7:
        return False
    if candidate.startswith("+"):
        return True
    if len(groups) == 2 and all(len(g) == 4 and _YEAR.fullmatch(g) for g in groups):
        return False  # a year range: 2025-2026
    if separators is None:
        separators = set(_NOT_SEPARATOR.sub("", candidate))
    if separators == {"."}:
        if len(groups) == 2:
            return False  # a decimal number
        if len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]):
            return False  # dotted thousands: 1.234.567
        if len(groups) == 4 and all(len(g) <= 3 for g in groups):
            return False  # an IPv4 address
    return True


class PiiMasker:
    """Masks emails and phone numbers; build once per config (it pre-computes field sets)."""

    __slots__ = ("email_fields", "phone_fields", "keep_last_digits", "_walk_dict")

    def __init__(self, email_fields: Iterable[str] = DEFAULT_EMAIL_FIELDS,
                 phone_fields: Iterable[str] = DEFAULT_PHONE_FIELDS, keep_last_digits: int = 2) -> None:
        if keep_last_digits not in (0, 1, 2):
            raise ValueError("keep_last_digits must be 0, 1 or 2")
        self.email_fields = frozenset(_variants(email_fields))
        self.phone_fields = frozenset(_variants(phone_fields))
        self.keep_last_digits = keep_last_digits
        self._walk_dict = self._build_walker()

    # -- strings -------------------------------------------------------------------------
    def phone_token(self, value: str) -> str:
        """The replacement for one phone number: ``***-***-**NN`` (last digits kept by config)."""
        return self._digits_token("".join(_DIGITS.findall(value)))

    def _digits_token(self, digits: str) -> str:
        """``phone_token`` of a number whose digits (``_DIGITS`` runs, joined) are ``digits``."""
        keep = self.keep_last_digits
        tail = digits[-keep:] if keep and digits else ""
        return "***-***-" + "*" * (4 - len(tail)) + tail

    def _phone_replacement(self, match: re.Match[str]) -> str | None:
        """What ``_phone_sub_reference`` replaces ``match`` with, None when it keeps it (a
        token never equals the match it replaces), without its two regex calls: a phone
        match holds only digits and ``_PHONE_NON_DIGITS``, so str.translate and str.split
        find its digit groups, and a set intersection its separators (a test holds them to
        the regexes); a '+' number of 7 digits or more needs no further decision."""
        if match.lastgroup == "keep":
            return None
        text = match.group()
        groups = text.translate(_PHONE_TO_SPACES).split()
        digits = "".join(groups)
        if len(digits) < 7 or (text[0] != "+" and not _is_phone(text, groups, set(text) & _PHONE_SEPARATORS)):
            return None
        return self._digits_token(digits)

    def _phone_sub_reference(self, match: re.Match[str]) -> str:
        text = match.group(0)
        if match.lastgroup == "keep" or not _is_phone(text):
            return text
        return self.phone_token(text)

    def _phone_edits(self, text: str, run: tuple[int, int] | None, encoded: bytes | None = None,
                     phoneish: bytes | None = None) -> list[tuple[int, int, str]]:
        """Where ``PHONE_OR_DATE_RE.sub(self._phone_sub_reference, text)`` would change ``text``, found by
        trying only positions inside phone-ish runs (same result, a test holds both to it)
        instead of running the lookbehind-led pattern over every character. ``run`` is the
        span of the first ``_RUN`` match in ``text``; ``encoded`` and ``phoneish`` as for ``_next_run``."""
        edits: list[tuple[int, int, str]] = []
        match_at = PHONE_OR_DATE_RE.match
        restart = _RESTART_AFTER
        done = 0  # the equivalent sub() has consumed the text up to here
        while run is not None:
            start, end = run
            if text[start] == "+" or not text[start:end].isdigit():  # a bare digit run (an id) is neither
                p = max(start, done)
                while p < end:
                    if p == start or text[p - 1] in restart:
                        m = match_at(text, p)
                        if m is not None:
                            m_end = m.end()
                            replacement = self._phone_replacement(m)
                            if replacement is not None:
                                edits.append((p, m_end, replacement))
                            done = p = m_end
                            continue
                    p += 1
            run = _next_run(text, max(end, done), encoded, phoneish)
        return edits

    def mask_text(self, text: str) -> str:
        """Mask every email and phone number inside free text."""
        if "@" in text:
            text = _apply(text, _email_edits(text))
        if len(text) < 8:
            return text  # the shortest phone, 555-0132, has 8 characters
        try:  # may_hold_phone(text), keeping the bytes for _next_run
            encoded: bytes | None = text.encode()
        except UnicodeEncodeError:
            encoded = None
        phoneish = (encoded or text.encode("utf-8", "surrogatepass")).translate(_PHONEISH_BYTES)
        if phoneish.find(b"00000000") == -1:
            return text
        if encoded is None:
            phoneish = None  # a lone surrogate: its bytes are not UTF-8, search with the regex alone
        run = _next_run(text, 0, encoded, phoneish)
        if run is None:
            return text
        return _apply(text, self._phone_edits(text, run, encoded, phoneish))

    def mask_text_reference(self, text: str) -> str:
        """The plain-regex definition of :meth:`mask_text`, kept for equivalence tests."""
        if "@" in text:
            text = EMAIL_RE.sub(r"***@\1", text)
        return PHONE_OR_DATE_RE.sub(self._phone_sub_reference, text)

    def mask_email_value(self, value: Any) -> Any:
        """A field that holds an email: keep only the domain, whatever the shape."""
        if value is None or value == "":
            return value
        text = value if isinstance(value, str) else str(value)
        at = text.rfind("@")
        if at >= 0:
            domain = text[at + 1:].strip()
            if domain and _DOMAIN_RE.fullmatch(domain):  # i.e. EMAIL_RE.fullmatch("x@" + domain)
                return "***@" + domain
        return "***"

    def mask_phone_value(self, value: Any) -> Any:
        """A field that holds a phone number: mask it even without separators (``4155550132``)."""
        if value is None or value == "" or isinstance(value, bool):
            return value
        text = value if isinstance(value, str) else str(value)
        digits = text.translate(_ASCII_NON_DIGITS) if text.isascii() else "".join(_DIGITS.findall(text))
        return self._digits_token(digits) if digits else "***"

    def _mask_field(self, name: str, value: Any) -> Any:
        return self.mask_phone_value(value) if name in self.phone_fields else self.mask_email_value(value)

    # -- documents -----------------------------------------------------------------------
    def _build_walker(self) -> Callable[[dict[Any, Any]], dict[Any, Any]]:
        """A closure over locals: the walk visits every value of every call, so it is hot.

        A string of letters and digits only (enums, names, ids) cannot hold an email
        or a phone (both need a character that is neither), and ``str.isalnum`` costs far
        less than a regex call; the rest are screened for '@' and a phone-ish run before
        any masking. The screen is inlined in ``walk_dict``, where almost all strings are:
        a call per string was a fifth of the walk.
        """
        contact_fields = self.email_fields | self.phone_fields
        mask_text = self.mask_text
        phone_fields = self.phone_fields
        mask_phone_value = self.mask_phone_value
        mask_email_value = self.mask_email_value

        def mask_field(name: str, value: Any) -> Any:
            return mask_phone_value(value) if name in phone_fields else mask_email_value(value)

        next_run = _next_run
        iso_full = _ISO_DATETIME.fullmatch
        iso_shape, iso_shapes = _ISO_SHAPE_BYTES, _ISO_SHAPES
        phone_edits = self._phone_edits
        phoneish = _PHONEISH_BYTES
        str_, dict_, list_ = str, dict, list

        def mask_phoneish(v: str, encoded: bytes | None, phoneish: bytes | None) -> str:
            """``mask_text`` for a string without '@' that ``may_hold_phone`` and is no lone
            ISO timestamp (the date rule keeps one whole); ``encoded``, ``phoneish`` as for
            ``_next_run``."""
            run = next_run(v, 0, encoded, phoneish)
            # bare digit runs (ids in URLs) are skipped by _phone_edits too: skip them here
            # and most such strings need no edit list at all
            while run is not None and v[run[0]:run[1]].isdigit():
                run = next_run(v, run[1], encoded, phoneish)
            return v if run is None else _apply(v, phone_edits(v, run, encoded, phoneish))

        def mask_str(v: str) -> str:
            """``mask_text`` for a string that is not all letters and digits."""
            if "@" in v:
                return mask_text(v)
            if len(v) < 8 or (v[4] == "-" and iso_full(v) is not None):
                return v  # the shortest phone, 555-0132, has 8 characters; the date rule keeps a timestamp
            return mask_text(v)

        def walk_dict(value: dict[Any, Any]) -> dict[Any, Any]:
            # Copy in C, then overwrite only what changes: containers (copied in turn)
            # and the few strings that mask to something else.
            out = value.copy()
            # CRM context fields come as {name: "Phone", value: "4155550132"}: "value" is done last
            pair = "value" in value and type(name := value.get("name")) is str_ and name in contact_fields
            for k, v in value.items():
                cls = type(v)
                if cls is str_:
                    if k in contact_fields:
                        out[k] = mask_phone_value(v) if k in phone_fields else mask_email_value(v)
                    elif not v.isalnum() and (n := len(v)) > 4 and not (pair and k == "value"):
                        # mask_str(v), inlined
                        if "@" in v:
                            masked = mask_text(v)
                        elif n < 8:
                            continue
                        else:
                            try:
                                encoded = v.encode()
                            except UnicodeEncodeError:  # a lone surrogate: the plain path
                                masked = mask_str(v)
                            else:
                                # a lone ISO timestamp (it has its "-" there) is kept whole, like a date
                                if v[4] == "-" and (encoded.translate(iso_shape) in iso_shapes
                                                    or iso_full(v) is not None):
                                    continue
                                translated = encoded.translate(phoneish)  # may_hold_phone(v), inlined
                                if translated.find(b"00000000") == -1:
                                    continue
                                masked = mask_phoneish(v, encoded, translated)
                        if masked is not v:
                            out[k] = masked
                elif cls is dict_:
                    out[k] = walk_dict(v)
                elif cls is list_:
                    out[k] = walk_list(v) if v else []
                elif v is None:
                    continue  # masks to itself, contact field or not
                elif k in contact_fields:
                    out[k] = mask_field(k, v)
                elif not (cls is int or cls is float or cls is bool):
                    out[k] = walk_other(v)
            if pair:
                v = value["value"]
                if type(v) is not dict_ and type(v) is not list_:
                    out["value"] = mask_field(name, v)
            return out

        def walk_list(value: list[Any]) -> list[Any]:
            out = value.copy()
            i = 0
            for v in value:
                cls = type(v)
                if cls is dict_:
                    out[i] = walk_dict(v)
                elif cls is str_:
                    if not v.isalnum() and len(v) > 4:
                        masked = mask_str(v)
                        if masked is not v:
                            out[i] = masked
                elif cls is list_:
                    out[i] = walk_list(v)
                elif not (v is None or cls is int or cls is float or cls is bool):
                    out[i] = walk_other(v)
                i += 1
            return out

        def walk_other(value: Any) -> Any:
            """Rare: subclasses and non-JSON containers (tuples, Mappings)."""
            if isinstance(value, str):
                return mask_text(str(value))
            if isinstance(value, Mapping):
                return walk_dict(dict(value))
            if isinstance(value, (list, tuple)):
                return walk_list(list(value))
            return value

        return walk_dict

    def mask_body_walk(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Masked deep copy of a mapping, no key treated specially (``_meta``, ``media``)."""
        return self._walk_dict(body if type(body) is dict else dict(body))

    def mask_value(self, value: Any) -> Any:
        """Masked deep copy of any JSON value."""
        return self._walk_dict({"v": value})["v"]

    def mask_document(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Masked deep copy of one call: ``_meta`` copied verbatim, ``media`` (recording URLs) dropped."""
        body = document.copy() if type(document) is dict else dict(document)
        body.pop("_meta", None)
        body.pop("media", None)
        masked = self._walk_dict(body)
        if "_meta" not in document:
            return masked
        if type(document) is dict and next(reversed(document)) == "_meta":
            masked["_meta"] = _copy(document["_meta"])  # last already: no reordering needed
            return masked
        out: dict[str, Any] = {}
        for key in document:
            if key == "_meta":
                out[key] = _copy(document[key])
            elif key in masked:
                out[key] = masked[key]
        return out


def _email_edits(text: str) -> list[tuple[int, int, str]]:
    """Where ``EMAIL_RE.sub("***@\\1", text)`` would change ``text``: each '@' is tried from
    the start of the run of local-part characters before it, which is the only place
    the lookbehind lets a match begin."""
    edits: list[tuple[int, int, str]] = []
    done = 0
    find = text.find
    at = find("@")
    while at != -1:
        # the run of local-part characters ending at '@', found backwards with one regex match
        back = _LOCAL_RUN_BACK.match(text[at - 1:done - 1 if done else None:-1]) if at > done else None
        j = at - (back.end() if back is not None else 0)
        m = EMAIL_RE.match(text, j) if j < at else None
        if m is None:
            at = find("@", at + 1)
            continue
        replacement = "***@" + m.group(1)
        if replacement != m.group():
            edits.append((j, m.end(), replacement))
        done = m.end()
        at = find("@", done)
    return edits


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Splice sorted, non-overlapping (start, end, replacement) edits into ``text``."""
    if not edits:
        return text
    pieces = []
    last = 0
    for start, end, replacement in edits:
        pieces.append(text[last:start])
        pieces.append(replacement)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def _variants(names: Iterable[str]) -> set[str]:
    """Exact names plus common case variants, so the hot walk is a plain set lookup."""
    out: set[str] = set()
    for name in names:
        out.update({name, name.lower(), name.upper(), name[:1].upper() + name[1:], name[:1].lower() + name[1:]})
    return out


def _copy(value: Any) -> Any:
    """Deep copy of a JSON value without masking (cheaper than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


DEFAULT_MASKER = PiiMasker()


def mask_text(text: str) -> str:
    """Mask emails and phones in one string with the default settings."""
    return DEFAULT_MASKER.mask_text(text)


def mask_document(document: Mapping[str, Any], masker: PiiMasker | None = None) -> dict[str, Any]:
    """Masked deep copy of one call with the default (or the given) settings."""
    return (masker or DEFAULT_MASKER).mask_document(document)
