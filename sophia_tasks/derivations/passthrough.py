"""The identity derivation, with optional PII masking: for collections that only need copying to targets.

Config (all optional; the flow spec's ``config`` of the derivation):

    pii:
      email_fields: [ownerEmail, email]   # values of these fields are masked whole (***@domain)
      phone_fields: [phone, mobile]       # ... as phone numbers (***-***-**NN)
      keep_last_digits: 2                 # 0, 1 or 2 digits of a phone kept

With ``pii`` set, email addresses and phone numbers found in any string are masked too
(``sophia_tasks.derivations.pii``); ``_meta`` is copied unchanged. Without it the documents are
copied as they are.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

import orjson

from sophia_tasks.derivations.pii import PiiMasker

_PII_KEYS = {"email_fields", "phone_fields", "keep_last_digits"}


@lru_cache(maxsize=32)
def _masker(pii_json: bytes) -> PiiMasker:
    """One masker per configuration (it precomputes its field sets), built on the first batch."""
    pii = orjson.loads(pii_json)
    unknown = set(pii) - _PII_KEYS
    if unknown:
        raise ValueError(f"passthrough config pii: unknown setting(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(_PII_KEYS))})")
    for name in ("email_fields", "phone_fields"):
        value = pii.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"passthrough config pii.{name}: must be a list of field names")
    return PiiMasker(pii.get("email_fields", []), pii.get("phone_fields", []), pii.get("keep_last_digits", 2))


def derive(documents: list[dict[str, Any]], config: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    pii = (config or {}).get("pii")
    if pii is None:
        return [dict(doc) for doc in documents]
    if not isinstance(pii, Mapping):
        raise ValueError("passthrough config pii: must be a mapping with email_fields, phone_fields, keep_last_digits")
    masker = _masker(orjson.dumps(dict(pii), option=orjson.OPT_SORT_KEYS))
    out = []
    for doc in documents:
        body = {k: v for k, v in doc.items() if k != "_meta"}
        masked = masker.mask_body_walk(body)
        if "_meta" in doc:
            masked["_meta"] = dict(doc["_meta"])
        out.append(masked)
    return out
