"""Sealing at rest: round trips, mixed clear and sealed rows, rotation, wrong keys."""
from __future__ import annotations

import orjson
import pytest

from sophia_tasks.store.db import jsonb_text
from sophia_tasks.store.journal import journal_rows
from sophia_tasks.store.sealing import SEALED, SealedError, Sealer, is_sealed, new_key

EVENT = {"event_id": "e1", "collection": "gong_calls", "received_at": "2026-11-25T10:00:00.000000Z",
         "published_at": "2026-11-25T10:00:00.000000Z", "source": "webhook", "is_test": False,
         "document": {"metaData": {"id": "1"}, "parties": [{"emailAddress": "carl@acme.com"}]}}


def stored(text: str) -> object:
    """What PostgreSQL hands back for a json column: the parsed value."""
    return orjson.loads(text)


def test_a_sealed_value_holds_nothing_in_clear_and_opens_to_the_same_value() -> None:
    sealer = Sealer([new_key()])
    text = sealer.seal_text(jsonb_text(EVENT))
    assert "carl@acme.com" not in text and "gong_calls" not in text
    assert is_sealed(stored(text)) and list(stored(text)) == [SEALED]
    assert sealer.open(stored(text)) == EVENT


def test_without_a_key_values_stay_clear_and_clear_rows_open_as_they_are() -> None:
    clear = Sealer(())
    assert not clear.enabled and clear.seal_text('{"a":1}') == '{"a":1}'
    assert Sealer([new_key()]).open({"a": 1}) == {"a": 1}  # a row written before the key was set


def test_every_key_opens_the_first_seals_and_rotation_finds_old_rows() -> None:
    old, new = new_key(), new_key()
    before = stored(Sealer([old]).seal_text(jsonb_text(EVENT)))
    rotated = Sealer([new, old])
    assert rotated.open(before) == EVENT
    assert rotated.needs_resealing(before) and rotated.needs_resealing({"clear": True})
    after = stored(rotated.seal_text(jsonb_text(rotated.open(before))))
    assert not rotated.needs_resealing(after)
    with pytest.raises(SealedError, match="no key of SOPHIA_DATA_KEYS opens"):
        Sealer([old]).open(after)
    with pytest.raises(SealedError, match="SOPHIA_DATA_KEYS is not set"):
        Sealer(()).open(after)


def test_journal_rows_seal_the_event_and_keep_its_digest_stable() -> None:
    sealer = Sealer([new_key()])
    (first,), (second,) = journal_rows([EVENT], "live", sealer=sealer), journal_rows([EVENT], "live", sealer=sealer)
    assert is_sealed(stored(first[7])) and first[7] != second[7]  # two seals of one event differ...
    assert first[8] == second[8]  # ...so the conflict rule compares the clear text's digest
    (clear,) = journal_rows([EVENT], "live")
    assert clear[8] == first[8] and "carl@acme.com" in clear[7]


def test_open_bytes_gives_the_clear_text_of_a_sealed_value_and_none_for_a_clear_one() -> None:
    key = new_key()
    text = Sealer([key]).seal_text(jsonb_text(EVENT))
    assert orjson.loads(Sealer([new_key(), key]).open_bytes(stored(text))) == EVENT
    assert Sealer([key]).open_bytes(EVENT) is None
    with pytest.raises(SealedError, match="no key of SOPHIA_DATA_KEYS opens"):
        Sealer([new_key()]).open_bytes(stored(text))
    with pytest.raises(SealedError, match="SOPHIA_DATA_KEYS is not set"):
        Sealer(()).open_bytes(stored(text))
