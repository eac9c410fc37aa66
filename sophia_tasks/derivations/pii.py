"""PII masking for Gong call documents.

Why it exists: the enriched calls go to Redis, PostgreSQL and Snowflake, where many
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
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

__all__ = [
    "DEFAULT_EMAIL_FIELDS",
    "DEFAULT_PHONE_FIELDS",
    "PiiMasker",
    "DEFAULT_MASKER",
    "mask_document",
    "mask_text",
]

DEFAULT_EMAIL_FIELDS: tuple[str, ...] = ("emailAddress", "email", "Email", "EmailAddress", "email_address")
DEFAULT_PHONE_FIELDS: tuple[str, ...] = (
    "phoneNumber", "phone", "Phone", "PhoneNumber", "phone_number", "mobile", "Mobile",
    "MobilePhone", "mobilePhone", "HomePhone", "OtherPhone", "Fax",
)

# Characters allowed in an email local part (RFC 5322 atext plus dot, Unicode letters via \w).
_LOCAL = r"[\w.!#$%&'*+/=?^`{|}~-]"
# The negative lookbehind makes every attempt start at the beginning of a run, which
# keeps the scan linear even on long runs of word characters without an '@'.
EMAIL_RE = re.compile(rf"(?<!{_LOCAL}){_LOCAL}+@([\w-]+(?:\.[\w-]+)+)")

_SEP = r"[ \u00a0.\-/\u2010-\u2015]"
_GROUP = rf"(?:(?:{_SEP}{{1,3}}|(?<=\)))\(?\d+\)?)"
# Things that look like digit groups but are dates: tried first at each position, kept verbatim.
_KEEP = (
    r"(?P<keep>"
    # ISO-8601 date, optionally with time, fraction and offset.
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
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
_YEAR = re.compile(r"(?:19|20)\d\d")


def _is_phone(candidate: str) -> bool:
    """Decide on a phone-shaped candidate; False keeps it verbatim (not PII)."""
    groups = _DIGITS.findall(candidate)
    n_digits = sum(map(len, groups))
    if n_digits < 7:
        return False
    if candidate.startswith("+"):
        return True
    if len(groups) == 2 and all(len(g) == 4 and _YEAR.fullmatch(g) for g in groups):
        return False  # a year range: 2025-2026
    separators = set(re.sub(r"[\d()]", "", candidate))
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

    __slots__ = ("email_fields", "phone_fields", "keep_last_digits", "_walk")

    def __init__(self, email_fields: Iterable[str] = DEFAULT_EMAIL_FIELDS,
                 phone_fields: Iterable[str] = DEFAULT_PHONE_FIELDS, keep_last_digits: int = 2) -> None:
        if keep_last_digits not in (0, 1, 2):
            raise ValueError("keep_last_digits must be 0, 1 or 2")
        self.email_fields = frozenset(_variants(email_fields))
        self.phone_fields = frozenset(_variants(phone_fields))
        self.keep_last_digits = keep_last_digits
        self._walk = self._build_walker()

    # -- strings -------------------------------------------------------------------------
    def phone_token(self, value: str) -> str:
        """The replacement for one phone number: ``***-***-**NN`` (last digits kept by config)."""
        digits = "".join(_DIGITS.findall(value))
        keep = self.keep_last_digits
        tail = digits[-keep:] if keep and digits else ""
        return "***-***-" + "*" * (4 - len(tail)) + tail

    def _phone_sub(self, match: re.Match[str]) -> str:
        text = match.group(0)
        if match.lastgroup == "keep" or not _is_phone(text):
            return text
        return self.phone_token(text)

    def mask_text(self, text: str) -> str:
        """Mask every email and phone number inside free text."""
        if "@" in text:
            text = EMAIL_RE.sub(r"***@\1", text)
        run = _RUN.search(text)
        if run is None:
            return text
        return self._mask_phones(text, run)

    def _mask_phones(self, text: str, run: re.Match[str] | None) -> str:
        """``PHONE_OR_DATE_RE.sub(self._phone_sub, text)``, but only trying positions inside
        phone-ish runs. Same result (a test holds both to it), without running the
        lookbehind-led pattern over every character of a long brief."""
        match_at = PHONE_OR_DATE_RE.match
        restart = _RESTART_AFTER
        pieces: list[str] = []
        last = 0  # end of the text already copied to pieces
        done = 0  # the scan has consumed text up to here
        while run is not None:
            start, end = run.span()
            if text[start] != "+" and run.group().isdigit():
                run = _RUN.search(text, end)
                continue  # a bare digit run (an id) is never a phone nor a date
            p = max(start, done)
            while p < end:
                if p == start or text[p - 1] in restart:
                    m = match_at(text, p)
                    if m is not None:
                        replacement = self._phone_sub(m)
                        if replacement != m.group():
                            pieces.append(text[last:p])
                            pieces.append(replacement)
                            last = m.end()
                        done = p = m.end()
                        if p >= end:
                            break
                        continue
                p += 1
            run = _RUN.search(text, max(end, done))
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    def mask_text_reference(self, text: str) -> str:
        """The plain-regex definition of :meth:`mask_text`, kept for equivalence tests."""
        if "@" in text:
            text = EMAIL_RE.sub(r"***@\1", text)
        return PHONE_OR_DATE_RE.sub(self._phone_sub, text)

    def mask_email_value(self, value: Any) -> Any:
        """A field that holds an email: keep only the domain, whatever the shape."""
        if value is None or value == "":
            return value
        text = value if isinstance(value, str) else str(value)
        at = text.rfind("@")
        if at >= 0:
            domain = text[at + 1:].strip()
            if domain and EMAIL_RE.fullmatch("x@" + domain):
                return "***@" + domain
        return "***"

    def mask_phone_value(self, value: Any) -> Any:
        """A field that holds a phone number: mask it even without separators (``4155550132``)."""
        if value is None or value == "" or isinstance(value, bool):
            return value
        text = value if isinstance(value, str) else str(value)
        return self.phone_token(text) if _DIGITS.search(text) else "***"

    # -- documents -----------------------------------------------------------------------
    def _build_walker(self) -> Callable[[Any], Any]:
        """A closure over locals: the walk visits every value of every call, so it is hot.

        Strings are tested inline ('@' for emails, a compiled pre-check for phones) and
        only the few that may hold PII pay for a substitution; containers recurse.
        """
        email_fields = self.email_fields
        phone_fields = self.phone_fields
        contact_fields = email_fields | phone_fields
        mask_text = self.mask_text
        mask_email = self.mask_email_value
        mask_phone = self.mask_phone_value
        hint = _RUN.search
        str_, dict_, list_ = str, dict, list

        def walk_dict(value: dict[Any, Any]) -> dict[Any, Any]:
            out = {}
            for k, v in value.items():
                cls = type(v)
                if k in contact_fields and cls is not dict_ and cls is not list_:
                    out[k] = mask_phone(v) if k in phone_fields else mask_email(v)
                elif cls is str_:
                    out[k] = mask_text(v) if len(v) > 5 and ("@" in v or (hint(v) is not None and not v.isdigit())) else v
                elif cls is dict_:
                    out[k] = walk_dict(v)
                elif cls is list_:
                    out[k] = walk_list(v)
                elif v is None or cls is int or cls is float or cls is bool:
                    out[k] = v
                else:
                    out[k] = walk_other(v)
            name = out.get("name")
            if name is not None and type(name) is str_ and name in contact_fields and "value" in out:
                # CRM context fields come as {name: "Phone", value: "4155550132"}
                out["value"] = mask_phone(out["value"]) if name in phone_fields else mask_email(out["value"])
            return out

        def walk_list(value: list[Any]) -> list[Any]:
            out = []
            append = out.append
            for v in value:
                cls = type(v)
                if cls is str_:
                    append(mask_text(v) if len(v) > 5 and ("@" in v or (hint(v) is not None and not v.isdigit())) else v)
                elif cls is dict_:
                    append(walk_dict(v))
                elif cls is list_:
                    append(walk_list(v))
                elif v is None or cls is int or cls is float or cls is bool:
                    append(v)
                else:
                    append(walk_other(v))
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

        def walk(value: Any) -> Any:
            cls = type(value)
            if cls is dict_:
                return walk_dict(value)
            if cls is list_:
                return walk_list(value)
            if cls is str_:
                return mask_text(value)
            return walk_other(value)

        return walk

    def mask_value(self, value: Any) -> Any:
        """Masked deep copy of any JSON value."""
        return self._walk(value)

    def mask_document(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Masked deep copy of one call: ``_meta`` copied verbatim, ``media`` dropped."""
        walk = self._walk
        out: dict[str, Any] = {}
        for key, value in document.items():
            if key == "_meta":
                out[key] = _copy(value)
            elif key == "media":
                continue  # signed audio/video URLs must never reach analytics
            else:
                out[key] = walk(value)
        return out


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
