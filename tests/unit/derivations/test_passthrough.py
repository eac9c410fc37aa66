"""The passthrough derivation: a copy, or a copy with the PII its config names masked."""
from __future__ import annotations

import re

import pytest

from sophia_tasks.derivations.passthrough import derive

DEAL = {"_meta": {"event_id": "e1", "published_at": "v"}, "dealId": "1",
        "properties": {"ownerEmail": "rita@sophia.example", "dealname": "Acme"},
        "contacts": [{"email": "carl@acme.com", "mobilephone": "(415) 555-0142", "id": "0042"}],
        "notes": "call +1 415 555 0199 or write to carl@acme.com", "media": {"kept": True}}
CONFIG = {"pii": {"email_fields": ["email", "ownerEmail"], "phone_fields": ["mobilephone"], "keep_last_digits": 1}}


def test_without_config_documents_are_copied() -> None:
    out = derive([DEAL], {})
    assert out == [DEAL] and out[0] is not DEAL


def test_pii_named_in_the_config_is_masked_and_meta_kept() -> None:
    (out,) = derive([DEAL], CONFIG)
    assert out["_meta"] == DEAL["_meta"]
    assert out["properties"] == {"ownerEmail": "***@sophia.example", "dealname": "Acme"}
    assert out["contacts"] == [{"email": "***@acme.com", "mobilephone": "***-***-***2", "id": "0042"}]
    assert out["notes"] == "call ***-***-***9 or write to ***@acme.com"
    assert out["media"] == {"kept": True}  # only the enrichment of calls drops a media block
    assert DEAL["contacts"][0]["email"] == "carl@acme.com"  # the input is not changed


@pytest.mark.parametrize("pii, message", [
    ({"emails": ["x"]}, "unknown setting(s) emails"),
    ({"email_fields": "email"}, "pii.email_fields: must be a list of field names"),
    ({"keep_last_digits": 5}, "keep_last_digits must be 0, 1 or 2"),
    ("email", "must be a mapping"),
])
def test_bad_config_says_what_to_fix(pii: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        derive([DEAL], {"pii": pii})
