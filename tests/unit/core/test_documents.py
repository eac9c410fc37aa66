from __future__ import annotations

from datetime import datetime, timezone

from sophia_tasks.core.documents import format_version, latest_per_key, make_document, normalize_version, parse_time


def test_versions_sort_as_time() -> None:
    a = normalize_version("2026-11-20T20:30:00-05:00")
    b = normalize_version("2026-11-21T01:30:00.000001Z")
    assert a == "2026-11-21T01:30:00.000000Z"
    assert a < b
    assert normalize_version(1795631529) == "2026-11-25T18:32:09.000000Z"
    assert normalize_version(0) == "1970-01-01T00:00:00.000000Z"
    assert normalize_version("1795631529") == normalize_version(1795631529)


def test_unparseable_version_falls_back_to_default() -> None:
    default = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert normalize_version("not a date", default) == format_version(default)
    assert parse_time(True) is None and parse_time("") is None and parse_time({}) is None


def test_meta_first_and_published_at_first() -> None:
    doc = make_document({"b": 1, "_meta": {"junk": 1}, "a": 2}, {"published_at": "v", "event_id": "e"})
    assert list(doc) == ["_meta", "b", "a"]
    assert list(doc["_meta"]) == ["published_at", "event_id"]


def test_latest_per_key_keeps_newest_and_later_on_ties() -> None:
    d1 = {"_meta": {"published_at": "2026-01-01T00:00:00.000000Z"}, "n": 1}
    d2 = {"_meta": {"published_at": "2026-01-02T00:00:00.000000Z"}, "n": 2}
    d3 = {"_meta": {"published_at": "2026-01-01T00:00:00.000000Z"}, "n": 3}
    d4 = {"_meta": {"published_at": "2026-01-02T00:00:00.000000Z"}, "n": 4}
    out = dict(latest_per_key([("k", d2), ("k", d1), ("j", d3), ("k", d4)]))
    assert out["k"]["n"] == 4 and out["j"]["n"] == 3


from datetime import timedelta  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.one_of(st.none(), st.integers(min_value=-23 * 60, max_value=23 * 60)))
def test_format_version_is_exactly_strftimes_text(moment: datetime, offset_minutes: int | None) -> None:
    """The hand-written formatting replaced strftime on the webhook's path; the text must not change."""
    if offset_minutes is not None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    assert format_version(moment) == aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_inside_an_encoding_cache_each_document_is_encoded_once() -> None:
    import orjson

    from sophia_tasks.core.documents import encoded, encoding_cache, remember_encoding

    doc = {"_meta": {"published_at": "2026-01-01T00:00:00.000000Z"}, "a": [1, 2.5, "x"]}
    assert encoded(doc) == orjson.dumps(doc)
    assert encoded(doc) is not encoded(doc)  # no cache outside the block
    with encoding_cache():
        first = encoded(doc)
        assert encoded(doc) is first and first == orjson.dumps(doc)
        other = {"b": 1}
        assert encoded(other) == b'{"b":1}'
        loaded_text = b'{"c": 2}'  # a buffer item keeps its own text
        loaded = orjson.loads(loaded_text)
        remember_encoding(loaded, loaded_text)
        assert encoded(loaded) is loaded_text
    remember_encoding(loaded, b"ignored")  # outside a block: nothing is kept
    assert encoded(loaded) == b'{"c":2}'


def test_a_fragment_of_the_encoded_document_gives_the_same_row_text() -> None:
    import orjson

    from sophia_tasks.core.documents import encoded, encoding_cache

    doc = {"_meta": {"published_at": "2026-01-01T00:00:00.000000Z"}, "t": "é\u0000\"", "n": [None, True, 1e-7]}
    with encoding_cache():
        row = {"k": "1", "d": orjson.Fragment(encoded(doc)), "p": "v"}
        assert orjson.dumps(row) == orjson.dumps({"k": "1", "d": doc, "p": "v"})


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_a_version_passes_through_normalize_unchanged_and_equal_to_a_full_parse(moment: datetime) -> None:
    """The fast path keeps a version's text; it must be what parsing and formatting it gives."""
    from sophia_tasks.core.documents import is_version

    text = format_version(moment)
    assert is_version(text) == (moment.year >= 1000)  # strftime leaves earlier years unpadded
    if moment.year >= 1000:
        assert normalize_version(text) == text == format_version(parse_time(text))  # type: ignore[arg-type]


def test_version_shaped_text_that_is_no_moment_is_not_kept() -> None:
    from sophia_tasks.core.documents import is_version

    default = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    for text in ("2026-13-01T00:00:00.000000Z", "2026-02-30T00:00:00.000000Z", "2026-01-01T24:00:00.000000Z",
                 "2026-01-01T00:00:00.000000z", "2026-01-01T00:00:00.00000Z", "２026-01-01T00:00:00.000000Z"):
        assert not is_version(text)
        expected = format_version(parse_time(text) or default)
        assert normalize_version(text, default) == expected
    assert normalize_version("2026-02-30T00:00:00.000000Z", default) == format_version(default)


def test_latest_per_key_lets_a_delete_win_a_tie_in_either_order() -> None:
    up = make_document({"id": "k"}, {"published_at": "2026-01-01T00:00:00.000000Z"})
    gone = make_document({"id": "k"}, {"published_at": "2026-01-01T00:00:00.000000Z", "op": "d"})
    newer = make_document({"id": "k"}, {"published_at": "2026-01-01T00:00:01.000000Z"})
    assert latest_per_key([("k", up), ("k", gone)]) == [("k", gone)]
    assert latest_per_key([("k", gone), ("k", up)]) == [("k", gone)]
    assert latest_per_key([("k", gone), ("k", newer)]) == [("k", newer)]
