"""Payloads at rest sealed with Fernet: the journal's events and the dead letters' payloads carry PII.

A sealed value is stored as ``{"$sealed": "<Fernet token>"}`` in the same json/jsonb column, so
sealed and clear rows live side by side (a key added later, ``sophia-tasks keys rotate``). The
first of ``SOPHIA_DATA_KEYS`` seals; every key opens (MultiFernet), so keys rotate without a gap.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from sophia_tasks.settings import Settings

SEALED = "$sealed"


class SealedError(RuntimeError):
    """A sealed value that no configured key opens (or no key configured at all)."""


class Sealer:
    def __init__(self, keys: Iterable[str]) -> None:
        fernets = [Fernet(key.encode() if isinstance(key, str) else key) for key in keys]
        self._first = fernets[0] if fernets else None
        self._all = MultiFernet(fernets) if fernets else None

    @property
    def enabled(self) -> bool:
        return self._all is not None

    def seal_text(self, text: str) -> str:
        """The JSON text to store for the JSON ``text``: sealed when a key is configured."""
        if self._first is None:
            return text
        token = self._first.encrypt(text.encode("utf-8", "surrogatepass")).decode("ascii")
        return '{"' + SEALED + '":"' + token + '"}'

    def open(self, value: Any) -> Any:
        """The stored value as it was given: sealed values opened, clear ones as they are."""
        if not is_sealed(value):
            return value
        if self._all is None:
            raise SealedError("a sealed payload was read but SOPHIA_DATA_KEYS is not set")
        try:
            return orjson.loads(self._all.decrypt(value[SEALED].encode("ascii")))
        except InvalidToken:
            raise SealedError("no key of SOPHIA_DATA_KEYS opens this payload") from None

    def open_bytes(self, value: Any) -> bytes | None:
        """A sealed value's clear JSON text, unparsed (None for a clear value): erasure screens the text
        of every journaled event for an address and parses only the few that may hold it."""
        if not is_sealed(value):
            return None
        if self._all is None:
            raise SealedError("a sealed payload was read but SOPHIA_DATA_KEYS is not set")
        try:
            return self._all.decrypt(value[SEALED].encode("ascii"))
        except InvalidToken:
            raise SealedError("no key of SOPHIA_DATA_KEYS opens this payload") from None

    def needs_resealing(self, value: Any) -> bool:
        """Clear, or sealed under a key other than the first: ``keys rotate`` seals it again."""
        if self._first is None:
            return False
        if not is_sealed(value):
            return True
        try:
            self._first.decrypt(value[SEALED].encode("ascii"))
            return False
        except InvalidToken:
            return True


def sealer_for(settings: Settings) -> Sealer:
    return Sealer(key.reveal() for key in settings.data_keys)


def is_sealed(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and SEALED in value


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")
