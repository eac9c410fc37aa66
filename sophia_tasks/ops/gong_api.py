"""A small client for Gong's ``POST /v2/calls/extensive``, made for backfills.

Why its own module: Gong allows 3 requests per second (and 10,000 a day) and answers
429 + ``Retry-After`` beyond that; a backfill must pace itself, wait out 429s, retry
the 5xx blips of a long run a bounded number of times, and say exactly which page
(cursor) failed when one never recovers, so the run can resume from that cursor.
No Celery, no database: ``backfill`` drives it and keeps the checkpoint.
"""
from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import requests

log = logging.getLogger(__name__)

CALLS_PATH = "/v2/calls/extensive"

#: Every block of a call (``gong.md``): ask for all of them, the derivations decide what to keep
#: (the PII step drops ``media``, whose signed URLs must never reach analytics).
CONTENT_SELECTOR: dict[str, Any] = {
    "context": "Extended",
    "contextTiming": ["Now", "TimeOfCall"],
    "exposedFields": {
        "parties": True,
        "media": True,
        "content": {
            "structure": True,
            "topics": True,
            "trackers": True,
            "trackerOccurrences": True,
            "pointsOfInterest": True,
            "brief": True,
            "outline": True,
            "highlights": True,
            "callOutcome": True,
            "keyPoints": True,
        },
        "interaction": {
            "speakers": True,
            "video": True,
            "personInteractionStats": True,
            "questions": True,
        },
        "collaboration": {"publicComments": True},
    },
}


class GongAPIError(RuntimeError):
    """A page Gong would not give us; names the page and the cursor to resume from."""

    def __init__(self, message: str, page: int, cursor: str | None, status: int | None = None) -> None:
        self.page = page
        self.cursor = cursor
        self.status = status
        where = f"page {page}" + (f" (cursor {cursor})" if cursor else " (first page, no cursor)")
        super().__init__(f"Gong {where}: {message}")


class TokenBucket:
    """At most ``rate`` acquisitions per second, bursts up to ``capacity``.

    With ``capacity=1`` the calls are simply spaced ``1/rate`` apart, which keeps any
    one-second window at ``rate`` requests: what Gong's limit means.
    """

    def __init__(self, rate: float, capacity: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.clock = clock
        self.sleep = sleep
        self._tokens = float(capacity)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, tokens: float = 1.0) -> float:
        """Take ``tokens``, sleeping until they are there; answer how long we waited."""
        waited = 0.0
        with self._lock:
            while True:
                now = self.clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= tokens:
                    self._tokens -= tokens
                    return waited
                delay = (tokens - self._tokens) / self.rate
                self.sleep(delay)
                waited += delay


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - now())


def iso_utc(moment: datetime) -> str:
    """Gong wants ISO-8601 with an offset: ``2026-01-05T00:00:00Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Page:
    """One page of calls; ``next_cursor`` is None on the last page."""

    number: int                    # 1-based, counted by us
    cursor: str | None             # the cursor that fetched this page (None for the first)
    calls: list[dict[str, Any]]
    next_cursor: str | None
    total_records: int | None = None
    attempts: int = 1
    waited_seconds: float = 0.0


@dataclass
class GongClient:
    """Pages through ``/v2/calls/extensive`` politely.

    ``max_retries`` bounds the retries of one page on 5xx or a network error
    (exponential backoff from ``backoff_base`` seconds, with jitter); 429s are waited
    out as Gong says, up to ``max_rate_limit_waits`` times and never longer than
    ``max_retry_after`` seconds at once (a day-quota 429 should fail fast, resumable).
    """

    base_url: str
    access_key: str
    access_key_secret: str
    rate_per_second: float = 3.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_rate_limit_waits: int = 20
    max_retry_after: float = 300.0
    timeout: float = 60.0
    session: Any = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    bucket: TokenBucket | None = None
    requests_made: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if self.session is None:
            self.session = requests.Session()
        if self.bucket is None:
            self.bucket = TokenBucket(self.rate_per_second, 1.0, clock=self.clock, sleep=self.sleep)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** max(0, attempt - 1)))
        return ceiling * (0.5 + random.random() * 0.5)

    def fetch_page(self, since: datetime, until: datetime, cursor: str | None, number: int) -> Page:
        """One page, with the rate limit, 429 waits and bounded 5xx retries; GongAPIError if it never comes."""
        body: dict[str, Any] = {
            "filter": {"fromDateTime": iso_utc(since), "toDateTime": iso_utc(until)},
            "contentSelector": CONTENT_SELECTOR,
        }
        if cursor:
            body["cursor"] = cursor
        url = self.base_url + CALLS_PATH
        failures = 0
        rate_limited = 0
        waited = 0.0
        attempts = 0
        while True:
            assert self.bucket is not None
            waited += self.bucket.acquire()
            attempts += 1
            self.requests_made += 1
            try:
                resp = self.session.post(url, json=body, auth=(self.access_key, self.access_key_secret),
                                         timeout=self.timeout, headers={"Accept": "application/json"})
            except requests.RequestException as exc:
                failures += 1
                if failures > self.max_retries:
                    raise GongAPIError(f"failed after {attempts} attempt(s): {type(exc).__name__}: {exc}",
                                       number, cursor) from exc
                delay = self._backoff(failures)
                log.warning("Gong page %d: %s; retry %d/%d in %.1fs", number, exc, failures, self.max_retries, delay)
                self.sleep(delay)
                waited += delay
                continue
            status = resp.status_code
            if status == 200:
                try:
                    data = resp.json()
                except ValueError as exc:
                    raise GongAPIError(f"answered 200 with a body that is not JSON: {resp.text[:200]!r}",
                                       number, cursor, status) from exc
                return self._page(data, number, cursor, attempts, waited)
            if status == 404 and cursor is None:
                # Gong answers 404 "No calls found corresponding to the provided filters" for an empty range.
                return Page(number=number, cursor=None, calls=[], next_cursor=None, total_records=0,
                            attempts=attempts, waited_seconds=waited)
            if status == 429:
                rate_limited += 1
                delay = retry_after_seconds(resp.headers.get("Retry-After"))
                delay = 1.0 if delay is None else delay
                if delay > self.max_retry_after:
                    raise GongAPIError(f"rate limited (429) with Retry-After {delay:.0f}s, longer than "
                                       f"{self.max_retry_after:.0f}s (daily quota?); rerun later to resume",
                                       number, cursor, status)
                if rate_limited > self.max_rate_limit_waits:
                    raise GongAPIError(f"still rate limited (429) after {rate_limited - 1} wait(s)",
                                       number, cursor, status)
                log.info("Gong page %d: 429, waiting %.1fs as Retry-After says", number, delay)
                self.sleep(delay)
                waited += delay
                continue
            if status >= 500:
                failures += 1
                if failures > self.max_retries:
                    raise GongAPIError(f"HTTP {status} after {attempts} attempt(s): {_snippet(resp)}",
                                       number, cursor, status)
                delay = self._backoff(failures)
                log.warning("Gong page %d: HTTP %d; retry %d/%d in %.1fs", number, status, failures,
                            self.max_retries, delay)
                self.sleep(delay)
                waited += delay
                continue
            # 400, 401, 403, other 404s: retrying will not help.
            raise GongAPIError(f"HTTP {status}: {_snippet(resp)}", number, cursor, status)

    def _page(self, data: Any, number: int, cursor: str | None, attempts: int, waited: float) -> Page:
        if not isinstance(data, dict):
            raise GongAPIError("answered 200 with JSON that is not an object", number, cursor, 200)
        calls = data.get("calls") or []
        if not isinstance(calls, list):
            raise GongAPIError("answered 200 but calls is not a list", number, cursor, 200)
        records = data.get("records") if isinstance(data.get("records"), dict) else {}
        next_cursor = records.get("cursor") or None
        total = records.get("totalRecords")
        return Page(number=number, cursor=cursor, calls=calls,
                    next_cursor=str(next_cursor) if next_cursor else None,
                    total_records=int(total) if isinstance(total, int) else None,
                    attempts=attempts, waited_seconds=waited)

    def pages(self, since: datetime, until: datetime, cursor: str | None = None,
              first_number: int = 1) -> Iterator[Page]:
        """Every page from ``cursor`` (None = the start) to the last one."""
        number = first_number
        while True:
            page = self.fetch_page(since, until, cursor, number)
            yield page
            if not page.next_cursor:
                return
            cursor = page.next_cursor
            number += 1


def _snippet(resp: Any) -> str:
    try:
        text = resp.text
    except Exception:  # pragma: no cover - a body we cannot even decode
        text = ""
    text = " ".join(str(text).split())
    return text[:300] or "(empty body)"
