from __future__ import annotations

from datetime import datetime, timezone

from sophia_tasks.documents import format_version, latest_per_key, make_document, normalize_version, parse_time


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
