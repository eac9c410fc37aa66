"""Finding one e-mail address in documents, for erasure (``sophia-tasks erase --email``).

Why here: the erase command (ops) and every materializer's search (materializers) must agree
on what "this document names the address" means, and both sit above ``core``.

The rule: the address, in any letter case, as a whole address wherever a string holds it (a
party's ``emailAddress``, free text, a ``mailto:`` link, a dict key). "Whole" means the match is
not part of a longer address: ``bob@acme.com`` is not found in ``jimbob@acme.com`` nor in
``bob@acme.com.au``, but is in ``"Bob@ACME.com, carl@acme.com"``.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

# What may sit right before an address's local part (RFC 5322 atext and the dot, as in
# derivations/pii.py), and what continues a domain: a letter, digit, hyphen or ".label".
_LOCAL_CHAR = r"[\w.!#$%&'*+/=?^`{|}~-]"
_DOMAIN_GOES_ON = r"(?:[\w-]|\.[\w-])"


class AddressError(ValueError):
    """Not something that can be an e-mail address."""


def normalize_address(address: str) -> str:
    """The address as it is compared and hashed: trimmed and lower-cased."""
    value = address.strip().lower()
    local, at, domain = value.partition("@")
    if not at or not local or not domain or "@" in domain or any(ch.isspace() for ch in value):
        raise AddressError(f"{address.strip()!r} is not an e-mail address: give one such as name@example.com")
    return value


def address_hash(address: str) -> str:
    """SHA-256 (hex) of the normalized address: what the audit row keeps instead of the address."""
    return hashlib.sha256(normalize_address(address).encode("utf-8")).hexdigest()


def like_pattern(address: str, escape: str = "!") -> str:
    """An ``ILIKE`` pattern finding the address anywhere in a text, wildcards in it escaped.

    A pre-filter only (it also finds ``jimbob@…``): candidates are confirmed with
    :meth:`AddressMatcher.names`.
    """
    value = normalize_address(address)
    for ch in (escape, "%", "_"):
        value = value.replace(ch, escape + ch)
    return f"%{value}%"


class AddressMatcher:
    """Answers whether a text or a JSON value names one address."""

    def __init__(self, address: str) -> None:
        self.address = normalize_address(address)
        self._re = re.compile(rf"(?<!{_LOCAL_CHAR}){re.escape(self.address)}(?!{_DOMAIN_GOES_ON})", re.IGNORECASE)
        # The byte screen needs the address as JSON writes it: plain ASCII with nothing to escape.
        plain = self.address.isascii() and '"' not in self.address and "\\" not in self.address
        self._ascii = self.address.encode("utf-8") if plain else None

    def in_text(self, text: str) -> bool:
        return "@" in text and self._re.search(text) is not None

    def may_be_in(self, raw: bytes) -> bool:
        """A cheap screen of a document's JSON text: False only when it cannot name the address."""
        if self._ascii is None:
            return True
        return self._ascii in raw.lower()

    def names(self, value: Any) -> bool:
        """True when any string in ``value`` (dict keys included, at any depth) holds the address."""
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if self.in_text(item):
                    return True
            elif isinstance(item, Mapping):
                for key, child in item.items():
                    if isinstance(key, str) and self.in_text(key):
                        return True
                    stack.append(child)
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
        return False
