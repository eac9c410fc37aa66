"""The Gong client: pacing, 429 waits, bounded 5xx retries, permanent failures, pagination.

A fake clock and a scripted session make every wait visible and instant.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import requests

from sophia_tasks.ops.gong_api import (
    CONTENT_SELECTOR,
    GongAPIError,
    GongClient,
    TokenBucket,
    iso_utc,
    retry_after_seconds,
)

SINCE = datetime(2026, 11, 1, tzinfo=timezone.utc)
UNTIL = datetime(2026, 12, 1, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Response:
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self._body = body
        self.headers = headers or {}
        self.text = "" if body is None else str(body)

    def json(self) -> Any:
        if isinstance(self._body, (dict, list)):
            return self._body
        raise ValueError("not JSON")


class Session:
    """Answers from a script; records (time, json body, auth) of each POST."""

    def __init__(self, clock: Clock, script: list[Any]) -> None:
        self.clock = clock
        self.script = list(script)
        self.calls: list[tuple[float, dict[str, Any], Any]] = []

    def post(self, url: str, json: dict[str, Any], auth: Any, timeout: float, headers: dict[str, str]) -> Response:
        assert url == "http://gong.test/v2/calls/extensive"
        self.calls.append((self.clock(), json, auth))
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def page(calls: list[dict[str, Any]], cursor: str | None = None, total: int = 3) -> Response:
    records: dict[str, Any] = {"totalRecords": total, "currentPageSize": len(calls)}
    if cursor:
        records["cursor"] = cursor
    return Response(200, {"requestId": "r", "records": records, "calls": calls})


def client(clock: Clock, script: list[Any], **kwargs: Any) -> tuple[GongClient, Session]:
    session = Session(clock, script)
    c = GongClient("http://gong.test/", "key", "secret", session=session, sleep=clock.sleep, clock=clock, **kwargs)
    return c, session


def test_token_bucket_spaces_calls_to_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(3.0, 1.0, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(7):
        bucket.acquire()
        stamps.append(clock.now)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(g == pytest.approx(1 / 3) for g in gaps)
    assert all(stamps[i + 3] - stamps[i] >= 1.0 - 1e-9 for i in range(len(stamps) - 3))
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_pages_follow_the_cursor_with_basic_auth_and_the_full_content_selector() -> None:
    clock = Clock()
    c, session = client(clock, [page([{"metaData": {"id": "1"}}], "A"), page([{"metaData": {"id": "2"}}], "B"),
                                page([{"metaData": {"id": "3"}}])])
    got = list(c.pages(SINCE, UNTIL))
    assert [p.number for p in got] == [1, 2, 3]
    assert [p.cursor for p in got] == [None, "A", "B"] and got[-1].next_cursor is None
    assert [call[1].get("cursor") for call in session.calls] == [None, "A", "B"]
    body = session.calls[0][1]
    assert body["filter"] == {"fromDateTime": "2026-11-01T00:00:00Z", "toDateTime": "2026-12-01T00:00:00Z"}
    assert body["contentSelector"] == CONTENT_SELECTOR
    assert session.calls[0][2] == ("key", "secret")
    assert got[0].total_records == 3


def test_429_waits_for_retry_after_then_goes_on() -> None:
    clock = Clock()
    c, session = client(clock, [Response(429, {"errors": ["slow down"]}, {"Retry-After": "2"}), page([], None, 0)])
    p = c.fetch_page(SINCE, UNTIL, None, 1)
    assert p.attempts == 2 and p.calls == []
    assert session.calls[1][0] - session.calls[0][0] >= 2.0
    assert 2.0 in clock.sleeps


def test_a_day_quota_429_fails_fast_and_resumably() -> None:
    clock = Clock()
    c, _ = client(clock, [Response(429, {}, {"Retry-After": "36000"})])
    with pytest.raises(GongAPIError, match="rerun later") as err:
        c.fetch_page(SINCE, UNTIL, "CUR", 4)
    assert err.value.page == 4 and err.value.cursor == "CUR" and "page 4 (cursor CUR)" in str(err.value)


def test_5xx_and_network_errors_are_retried_with_backoff_a_bounded_number_of_times() -> None:
    clock = Clock()
    c, session = client(clock, [Response(503), requests.ConnectionError("reset"), Response(500), page([])],
                        max_retries=3, backoff_base=1.0)
    assert c.fetch_page(SINCE, UNTIL, None, 1).attempts == 4
    backoffs = [s for s in clock.sleeps if s > 0.34]  # the bucket's own waits are at most 1/3 s
    assert len(backoffs) == 3 and backoffs[0] <= 1.0 < backoffs[1] <= 2.0 < backoffs[2] <= 4.0

    clock2 = Clock()
    c2, session2 = client(clock2, [Response(502)] * 3, max_retries=2)
    with pytest.raises(GongAPIError, match="HTTP 502 after 3 attempt") as err:
        c2.fetch_page(SINCE, UNTIL, "X", 2)
    assert err.value.status == 502 and len(session2.calls) == 3


def test_client_errors_are_not_retried_and_an_empty_range_is_not_an_error() -> None:
    clock = Clock()
    c, session = client(clock, [Response(401, {"errors": ["bad key"]})])
    with pytest.raises(GongAPIError, match="HTTP 401"):
        c.fetch_page(SINCE, UNTIL, None, 1)
    assert len(session.calls) == 1
    c, _ = client(clock, [Response(404, {"errors": ["No calls found corresponding to the provided filters"]})])
    empty = c.fetch_page(SINCE, UNTIL, None, 1)
    assert empty.calls == [] and empty.next_cursor is None
    c, _ = client(clock, [Response(200, "<html>")])
    with pytest.raises(GongAPIError, match="not JSON"):
        c.fetch_page(SINCE, UNTIL, None, 1)


def test_retry_after_forms_and_iso_dates() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 25 Nov 2026 18:00:10 GMT", now=lambda: 1795629600.0) == pytest.approx(10.0)
    assert iso_utc(datetime(2026, 1, 5, 3, 0)) == "2026-01-05T03:00:00Z"
