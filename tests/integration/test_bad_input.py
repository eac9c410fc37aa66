"""Bad input through the real web app (granian, as the Procfile runs it): each case gets a clean 4xx (never a 5xx), and
odd-but-valid input (unicode, control characters, odd UTC offsets) lands literally.

Cases already in test_webhook_errors.py (a truncated JSON object, application/xml, a 300 KiB
JSON body, metaData missing/"12ab"/123) are not repeated here.
"""
from __future__ import annotations

import json
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from tests.integration.conftest import TOKEN, Harness, gong_call
from tests.integration.test_pipeline import envelope, landed_everywhere


def new_id() -> str:
    return str(uuid.uuid4().int % 10**18)


def assert_json_error(resp: Any, status: int) -> dict[str, Any]:
    """The contract's error shape: the status asked for and a JSON ``{"error": ...}``."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"]
    return body


# ----------------------------------------------------------------------------- raw HTTP


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (status, lower-cased headers, body) from a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:length]


def _head(harness: Harness, extra: str, token: str | None = TOKEN) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /estuary/webhook HTTP/1.1\r\nHost: 127.0.0.1:{harness.stack.web_port}\r\n{auth}"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("token", [TOKEN, None], ids=["with-token", "without-token"])
def test_huge_declared_length_is_413_before_the_body_is_read(harness: Harness, token: str | None) -> None:
    """A sender that declares 1 GB and sends 40 bytes gets 413 at once, authenticated or not:
    the server never waits for (or buffers) a body it will refuse."""
    with socket.create_connection(("127.0.0.1", harness.stack.web_port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(_head(harness, f"Content-Length: {10**9}\r\n", token) + b'{"type": "call_completed", "data": ')
        status, _, body = _read_response(sock, timeout=10)
        elapsed = time.monotonic() - started
    assert status == 413, body
    assert json.loads(body)["error"] == "body too large"
    assert elapsed < 5, f"the 413 took {elapsed:.1f}s: the server waited for the body"


def test_chunked_body_over_the_limit_is_413_without_waiting_for_its_end(harness: Harness) -> None:
    """No Content-Length (chunked): the body is read up to the limit, then refused; the sender never
    finishes it (no terminating chunk), so a server that waited would time out instead."""
    limit = int(harness.env["SOPHIA_MAX_BODY_BYTES"])
    chunk = b"x" * 65536
    with socket.create_connection(("127.0.0.1", harness.stack.web_port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(_head(harness, "Transfer-Encoding: chunked\r\n"))
        sent = 0
        while sent <= limit + len(chunk):
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
        status, _, body = _read_response(sock, timeout=10)
        elapsed = time.monotonic() - started
    assert status == 413, body
    assert json.loads(body)["error"]
    assert elapsed < 5


def _chunked_post(harness: Harness, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` as a complete chunked request (no Content-Length), 64 KiB per chunk."""
    with socket.create_connection(("127.0.0.1", harness.stack.web_port), timeout=10) as sock:
        sock.sendall(_head(harness, "Transfer-Encoding: chunked\r\nConnection: close\r\n"))
        for start in range(0, len(body), 65536):
            part = body[start:start + 65536]
            sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        status, _, answer = _read_response(sock, timeout=10)
    return status, answer


def test_chunked_body_exactly_at_the_limit_is_read_whole_and_one_byte_more_is_413(harness: Harness) -> None:
    """The limit is exact for chunked bodies too: a valid call padded to the limit is accepted;
    one more byte of padding is refused, not cut back to the limit and accepted."""
    limit = int(harness.env["SOPHIA_MAX_BODY_BYTES"])
    call = gong_call()
    core = json.dumps(envelope(call)).encode()
    at_limit = core + b" " * (limit - len(core))
    status, answer = _chunked_post(harness, at_limit)
    assert status == 202, answer
    status, answer = _chunked_post(harness, core.replace(b"}", b" }", 1) + b" " * (limit - len(core)))
    assert status == 413, answer
    assert json.loads(answer)["error"] == "body too large"


# ----------------------------------------------------------------------------- bad JSON / types


@pytest.mark.parametrize("raw", [
    b'{"type": "call_completed", "data": {"metaData": {"id": "1"}}} trailing',
    b'{"type": "call_completed"}{"type": "call_completed"}',
    b"{'type': 'call_completed'}",
    b'{"type": "call_completed", "data": {"metaData": {"id": "1", "duration": NaN}}}',
    b'{"type": "call_completed", "data": {"metaData": {"id": "1", "duration": 1e999}}}',
    b'{"type": "call_completed", "data": {"metaData": {"id": "1", "title": "\xff\xfe"}}}',
    b'{"type": "call_completed", "data": {"metaData": {"id": "1", "title": "\\ud800"}}}',
    b'{"type": "call_completed", "data": {"metaData": {"id": "1", "title": "a\x01b"}}}',
    b"\x00\x00\x00",
    b"",
], ids=["trailing-garbage", "two-objects", "single-quotes", "nan", "inf", "bad-utf8", "lone-surrogate",
        "raw-control-char", "nul-bytes", "empty"])
def test_bad_json_is_400(harness: Harness, raw: bytes) -> None:
    assert_json_error(harness.post(None, raw=raw), 400)


@pytest.mark.parametrize("content_type, status", [
    ("text/html", 415),
    ("multipart/form-data; boundary=xyz", 415),
    ("application/json; charset=utf-16", 415),
    ("image/png", 415),
    ("application/x-ndjson; charset=latin1", 415),
])
def test_wrong_content_types_are_415(harness: Harness, content_type: str, status: int) -> None:
    body = json.dumps(envelope(gong_call())).encode()
    assert_json_error(harness.post(None, raw=body, headers={"Content-Type": content_type}), status)


def test_content_types_that_are_read_as_json_are_accepted(harness: Harness) -> None:
    """What curl -d sends, text/plain, a +json type and no content type at all are all JSON."""
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "application/vnd.gong+json", None):
        body = json.dumps(envelope(gong_call())).encode()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        resp = harness.http.post(harness.url + "/estuary/webhook", data=body, headers=headers, timeout=30)
        assert resp.status_code == 202, (content_type, resp.text)


@pytest.mark.parametrize("body, fragment", [
    ({"type": 5, "data": {"metaData": {"id": "1"}}}, "type must be a string"),
    ({"type": "call_completed", "id": 17, "data": {"metaData": {"id": "1"}}}, "id must be a string"),
    ({"type": "call_completed", "data": "a call"}, "data must be a JSON object"),
    ({"callData": {"metaData": {"id": "1"}}, "isTest": 1}, "isTest must be true or false"),
    ({"type": "call_completed", "occurred_at": True, "data": {"metaData": {"id": "1"}}}, "occurred_at"),
    ({"type": "call_completed", "occurred_at": "yesterday", "data": {"metaData": {"id": "1"}}}, "occurred_at"),
    ({"type": "call_completed", "occurred_at": 1e20, "data": {"metaData": {"id": "1"}}}, "occurred_at"),
    ({"callData": "a call"}, "callData must be a JSON object"),
    ([{"type": "call_completed", "data": {"metaData": {"id": "1"}}}, {"callData": []}],
     "item 1: callData must be a JSON object"),
], ids=["type-number", "envelope-id-number", "data-string", "istest-number", "occurred-bool", "occurred-words",
        "occurred-huge", "calldata-string", "batch-item-calldata-array"])
def test_numbers_and_shapes_the_envelope_needs_are_400(harness: Harness, body: Any, fragment: str) -> None:
    err = assert_json_error(harness.post(body), 400)
    assert fragment in err.get("detail", ""), err


def test_a_call_without_its_key_or_with_a_bad_id_is_dead_lettered_with_the_schema_errors(harness: Harness) -> None:
    """The key and the id rule are the collection's (the gong_call schema), not the envelope's: such calls are
    accepted (202), then dead-lettered by the validate stage with every error, as any schema-invalid call."""
    bad_ids = ["-1", "1.5", "1e5", " 123", "0x1F", "١٢٣", "1" * 33, "12;DROP TABLE x", "*", "", 123, None]
    calls = [{"metaData": {"id": call_id, "title": "bad id"}} for call_id in bad_ids]
    calls += [{"metaData": "1"}, {}, {"metaData": {"title": "no id"}}]
    resp = harness.post([{"type": "call_completed", "data": c} for c in calls[:-1]] + [{"callData": calls[-1]}])
    assert resp.status_code == 202, resp.text
    ids = resp.json()["event_ids"]
    def letters_of_the_batch() -> list[dict[str, Any]] | None:
        rows = [row for i in ids for row in harness.dead_letters(event_id=i)]
        return rows if len(rows) == len(ids) else None

    letters = harness.wait(letters_of_the_batch, 60, "every dead letter")
    assert len(letters) == len(calls)
    for letter, call in zip(letters, calls, strict=True):
        assert letter["stage"] == "validate" and letter["payload"]["document"] == call
        assert "metaData" in letter["details"] or "/metaData/id" in letter["details"], letter["details"]
    by_id = {letter["payload"]["document"]["metaData"]["id"]: letter for letter in letters[:len(bad_ids)]}
    assert "1-32 digits" in by_id["1.5"]["error"]
    assert by_id["12;DROP TABLE x"]["document_key"] == "12;DROP TABLE x"


def test_wrong_types_inside_the_call_are_dead_lettered_with_every_field_error(harness: Harness) -> None:
    """The webhook only checks the key; the schema stage refuses numbers where strings belong (and
    strings where numbers belong) and keeps every field error in the dead letter."""
    call = gong_call(title=12345, duration="1860", isPrivate="no")
    call["parties"][0]["name"] = 7
    cid = call["metaData"]["id"]
    assert harness.post(envelope(call)).status_code == 202
    (letter,) = harness.wait(lambda: harness.dead_letters(document_key=cid), 60, "the dead letter")
    assert letter["stage"] == "validate"
    details = letter["details"]
    assert set(details["metaData"]) == {"title", "duration", "isPrivate"}
    assert "name" in details["parties"]["0"]
    assert harness.redis_doc(cid) is None and harness.pg_rows(cid) == []


# ----------------------------------------------------------------------------- nesting and size


def _nested_extra(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    inner = open_ * depth + close * depth
    return b'{"type": "call_completed", "data": {"metaData": {"id": "42"}, "extra": ' + inner + b"}}"


@pytest.mark.parametrize("raw, message", [
    (_nested_extra(63), "body is nested too deeply"),
    (b'{"type": "call_completed", "data": {"metaData": {"id": "42"}, "extra": '
     + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}}", "body is nested too deeply"),
    (_nested_extra(5000), "body is not valid JSON"),
    (b"[" * 200_000, "body is not valid JSON"),
], ids=["arrays-65-levels", "objects-102-levels", "arrays-5000-levels", "200k-open-brackets"])
def test_deep_nesting_is_400(harness: Harness, raw: bytes, message: str) -> None:
    started = time.monotonic()
    err = assert_json_error(harness.post(None, raw=raw), 400)
    assert err["error"] == message
    assert time.monotonic() - started < 5


def test_nesting_at_the_limit_is_accepted(harness: Harness) -> None:
    raw = _nested_extra(62).replace(b'"42"', f'"{new_id()}"'.encode())  # 2 + 62 = 64 levels
    resp = harness.post(None, raw=raw)
    assert resp.status_code == 202, resp.text


def test_batch_over_1000_items_is_400_and_1000_is_accepted(harness: Harness) -> None:
    """The item limit is exact; the 1,000 items here are Gong test deliveries (acknowledged, counted,
    never materialized), so the boundary is checked without loading the targets."""
    items = [{"callData": {"metaData": {"id": str(i)}}, "isTest": True, "id": f"t-{uuid.uuid4().hex}"}
             for i in range(1001)]
    err = assert_json_error(harness.post(items), 400)
    assert err["error"] == "batch too large" and "1001" in err["detail"]
    ndjson = b"\n".join(json.dumps(i).encode() for i in items)
    assert_json_error(harness.post(None, raw=ndjson, headers={"Content-Type": "application/x-ndjson"}), 400)
    ok = harness.post(items[:1000])
    assert ok.status_code == 202, ok.text
    assert len(ok.json()["event_ids"]) == 1000 and ok.json()["test"] is True


def test_huge_array_inside_a_call_is_not_a_batch_and_lands(harness: Harness) -> None:
    """Only the top-level batch is limited: a call may carry big lists (20,000 items, ~140 KB)."""
    call = gong_call()
    call["extra"] = list(range(20_000))
    cid = call["metaData"]["id"]
    resp = harness.post(envelope(call))
    assert resp.status_code == 202, resp.text
    harness.wait(lambda: landed_everywhere(harness, cid), 60, "the call with a huge array")
    assert harness.redis_doc(cid)["extra"][-1] == 19_999
    assert harness.pg_rows(cid)[0][1]["extra"][-1] == 19_999


# ----------------------------------------------------------------------------- unicode and control chars


WEIRD = ("Réunion 🚀 李 עברית e\u0301 \u200d\u200b \u2028\u2029 \ufeff tab\t nl\n cr\r bell\x07 esc\x1b "
         "del\x7f c1\x85 end \uffff")
WITH_NUL = "before\x00after \x00\x00 " + WEIRD


def test_unicode_and_control_characters_are_stored_literally(harness: Harness) -> None:
    """Every target keeps the text as sent, the projected title column included; only PostgreSQL's
    jsonb, which cannot hold NUL, gets U+FFFD in its place."""
    call = gong_call(title=WEIRD)
    call["content"]["brief"] = WITH_NUL
    call["metaData"]["customData"] = "\x00" * 3
    cid = call["metaData"]["id"]
    resp = harness.post(envelope(call))
    assert resp.status_code == 202, resp.text
    harness.wait(lambda: landed_everywhere(harness, cid), 60, "the unicode call")

    doc = harness.redis_doc(cid)
    assert doc["metaData"]["title"] == WEIRD and doc["metaData"]["customData"] == "\x00" * 3
    assert doc["content"]["brief"] == WITH_NUL
    served = harness.read(f"/v1/collections/gong_calls_enriched/documents/{cid}").json()
    assert served["metaData"]["title"] == WEIRD and served["content"]["brief"] == WITH_NUL

    (_, sf_doc, _, sf_title), = harness.sf_rows(cid)
    assert sf_title == WEIRD and sf_doc["metaData"]["title"] == WEIRD
    assert sf_doc["metaData"]["customData"] == "\x00" * 3 and sf_doc["content"]["brief"] == WITH_NUL

    (_, pg_doc, _, pg_title), = harness.pg_rows(cid)
    assert pg_title == WEIRD and pg_doc["metaData"]["title"] == WEIRD
    assert pg_doc["metaData"]["customData"] == "\ufffd" * 3
    assert pg_doc["content"]["brief"] == WITH_NUL.replace("\x00", "\ufffd")
    assert harness.dead_letters(document_key=cid) == []


def test_escaped_backslash_before_u0000_text_is_not_a_nul(harness: Harness) -> None:
    """The literal six characters backslash-u-0-0-0-0 are text, not a NUL: kept as they are."""
    text = "path C:\\u0000\\x and \\\\u0000"
    call = gong_call(title=text)
    cid = call["metaData"]["id"]
    assert harness.post(envelope(call)).status_code == 202
    harness.wait(lambda: landed_everywhere(harness, cid), 60, "the backslash call")
    assert harness.pg_rows(cid)[0][1]["metaData"]["title"] == text
    assert harness.pg_rows(cid)[0][3] == text
    assert harness.redis_doc(cid)["metaData"]["title"] == text
    assert harness.sf_rows(cid)[0][1]["metaData"]["title"] == text


# ----------------------------------------------------------------------------- timestamps


UTC_1400 = datetime(2026, 11, 20, 14, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("stamp, instant", [
    ("2026-11-21T04:00:00+14:00", UTC_1400),
    ("2026-11-20T02:00:00-12:00", UTC_1400),
    ("2026-11-20T19:45:00+05:45", UTC_1400),
    ("2026-11-20T19:45:00.123456+05:45", UTC_1400.replace(microsecond=123456)),
    ("2026-11-20T14:00:00.5Z", UTC_1400.replace(microsecond=500000)),
    ("2026-11-20T14:00:00.123456789+00:00", UTC_1400.replace(microsecond=123456)),
    ("2026-11-20T14:00:00", UTC_1400),
], ids=["plus14", "minus12", "plus0545", "fraction-plus0545", "fraction-z", "nanoseconds", "no-offset"])
def test_odd_offsets_reach_the_pipeline_as_the_right_instant(
        harness: Harness, stamp: str, instant: datetime) -> None:
    """occurred_at is the last-write-wins version (naive = UTC); metaData.started, projected to the
    ``started`` timestamptz column, is the same instant whatever offset it was written with."""
    call = gong_call(started=stamp if stamp[-6] in "+-" or stamp.endswith("Z") else stamp + "Z")
    cid = call["metaData"]["id"]
    resp = harness.post(envelope(call, occurred_at=stamp))
    assert resp.status_code == 202, resp.text
    harness.wait(lambda: landed_everywhere(harness, cid), 60, f"the call stamped {stamp}")
    version = instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert harness.redis_doc(cid)["_meta"]["published_at"] == version
    conn = harness.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT started, flow_published_at FROM gong_calls_enriched WHERE call_id = %s", (cid,))
            started, published = cur.fetchone()
    finally:
        conn.close()
    assert started == instant and published == instant
    assert harness.sf_rows(cid)[0][1]["_meta"]["published_at"] == version


def test_started_without_an_offset_is_dead_lettered(harness: Harness) -> None:
    """A call time with no offset is ambiguous; the schema refuses it instead of guessing."""
    call = gong_call(started="2026-11-20T14:00:00")
    cid = call["metaData"]["id"]
    assert harness.post(envelope(call)).status_code == 202
    (letter,) = harness.wait(lambda: harness.dead_letters(document_key=cid), 60, "the dead letter")
    assert "started" in letter["details"]["metaData"]


def test_last_write_wins_compares_instants_not_local_strings(harness: Harness) -> None:
    """'2026-11-21T03:00+14:00' (13:00Z) reads as later than '2026-11-20T02:00-12:00' (14:00Z) but
    is an hour earlier: delivered second, it must not overwrite the newer version anywhere."""
    cid = new_id()
    newer = harness.post(envelope(gong_call(cid, title="newer at 14:00Z"), occurred_at="2026-11-20T02:00:00-12:00"))
    assert newer.status_code == 202
    harness.wait(lambda: landed_everywhere(harness, cid, "newer at 14:00Z"), 60, "the newer version")
    older = harness.post(envelope(gong_call(cid, title="older at 13:00Z"), occurred_at="2026-11-21T03:00:00+14:00"))
    assert older.status_code == 202
    marker = gong_call()
    assert harness.post(envelope(marker)).status_code == 202
    harness.wait(lambda: landed_everywhere(harness, marker["metaData"]["id"]), 60, "a later call")
    time.sleep(0.5)
    assert landed_everywhere(harness, cid, "newer at 14:00Z")
