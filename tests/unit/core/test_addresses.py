"""Finding an e-mail address in documents, and the hash the erasure audit keeps instead of it."""
from __future__ import annotations

import hashlib

import pytest

from sophia_tasks.core.addresses import AddressError, AddressMatcher, address_hash, like_pattern, normalize_address


def test_the_hash_is_sha256_of_the_trimmed_lower_cased_address() -> None:
    expected = hashlib.sha256(b"carl.customer@acme.com").hexdigest()
    assert address_hash("carl.customer@acme.com") == expected
    assert address_hash("  Carl.Customer@ACME.com\n") == expected
    assert address_hash("carl.customer@acme.co") != expected


@pytest.mark.parametrize("bad", ["", "   ", "carl", "@acme.com", "carl@", "carl@acme@com", "carl @acme.com"])
def test_something_that_is_not_an_address_is_refused_with_an_example(bad: str) -> None:
    with pytest.raises(AddressError, match="name@example.com"):
        normalize_address(bad)


@pytest.mark.parametrize("text", [
    "carl@acme.com",
    "CARL@Acme.COM",
    "Reach Carl at carl@acme.com, or his assistant.",
    "mailto:Carl@acme.com",
    "<carl@acme.com>",
    "(carl@acme.com)",
    "rita@sophia.example;carl@acme.com",
    "carl@acme.com.",                       # end of a sentence
    "\"carl@acme.com\"",
])
def test_the_address_is_found_in_any_case_wherever_a_text_holds_it(text: str) -> None:
    assert AddressMatcher("Carl@ACME.com").in_text(text)


@pytest.mark.parametrize("text", [
    "jimcarl@acme.com",        # a longer local part
    "j.carl@acme.com",
    "carl+x@acme.com",         # another address of the same mailbox is another address
    "carl@acme.com.au",        # a longer domain
    "carl@acme.company",
    "carl@acme-com.org",
    "***@acme.com",            # what the PII masking leaves
    "carl at acme.com",
    "",
])
def test_a_longer_or_another_address_is_not_the_address(text: str) -> None:
    assert not AddressMatcher("carl@acme.com").in_text(text)


def test_names_walks_every_string_of_a_document_and_its_keys() -> None:
    matcher = AddressMatcher("carl@acme.com")
    call = {"metaData": {"id": "1", "title": "Acme"},
            "parties": [{"emailAddress": "rita@sophia.example"}, {"emailAddress": "Carl@Acme.com"}]}
    assert matcher.names(call)
    assert matcher.names({"content": {"brief": "Send the deck to CARL@ACME.COM tomorrow."}})
    assert matcher.names({"crm": {"carl@acme.com": {"stage": "won"}}})
    assert matcher.names(["x", ("y", {"z": ["carl@acme.com"]})])
    assert not matcher.names({"parties": [{"emailAddress": "***@acme.com"}], "n": 5, "ok": True, "none": None})
    assert not matcher.names({"parties": [{"emailAddress": "jimcarl@acme.com"}]})


def test_non_ascii_addresses_match_in_any_case() -> None:
    matcher = AddressMatcher("Élodie@exemple.fr")
    assert matcher.in_text("écrire à élodie@EXEMPLE.fr")
    assert matcher.may_be_in(b"anything")  # no byte screen for a non-ASCII address


def test_the_byte_screen_never_drops_a_document_that_names_the_address() -> None:
    matcher = AddressMatcher("carl@acme.com")
    assert matcher.may_be_in(b'{"parties":[{"emailAddress":"CARL@ACME.COM"}]}')
    assert not matcher.may_be_in(b'{"parties":[{"emailAddress":"***@acme.com"}]}')


def test_like_pattern_escapes_the_wildcards_of_an_address() -> None:
    assert like_pattern(" Carl@Acme.com ") == "%carl@acme.com%"
    assert like_pattern("a_b%c!d@x.io") == "%a!_b!%c!!d@x.io%"


def test_an_address_json_would_escape_is_never_screened_out() -> None:
    matcher = AddressMatcher('"carl"@acme.com')
    raw = b'{"note":"\\"carl\\"@acme.com"}'  # how JSON writes it
    assert matcher.may_be_in(raw) and matcher.in_text('write to "carl"@acme.com')
