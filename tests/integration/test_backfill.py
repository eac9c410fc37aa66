"""Backfill end to end: a file and a (fake) Gong API through the real worker into every target."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from sophia_tasks.ops.backfill import canonical_id
from tests.fixtures.gong_generator import generate_calls
from tests.integration.conftest import Harness, gong_call
from tests.integration.fake_gong import FakeGong

SOPHIA = str(Path(sys.executable).parent / "sophia-tasks")
CELERY = str(Path(sys.executable).parent / "celery")


# -- helpers ---------------------------------------------------------------------------------
def pg_ids(h: Harness, ids: set[str]) -> Counter[str]:
    conn = h.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('gong_calls_enriched')")
            if cur.fetchone()[0] is None:
                return Counter()
            cur.execute("SELECT call_id FROM gong_calls_enriched WHERE call_id = ANY(%s)", (sorted(ids),))
            return Counter(r[0] for r in cur.fetchall())
    finally:
        conn.close()


def sf_ids(h: Harness, ids: set[str]) -> Counter[str]:
    conn = h.sf_connect()
    try:
        cur = conn.cursor()
        try:
            cur.execute('SELECT "CALL_ID" FROM "GONG_CALLS_ENRICHED"')
        except Exception as exc:
            if "does not exist" in str(exc):
                return Counter()
            raise
        return Counter(r[0] for r in cur.fetchall() if r[0] in ids)
    finally:
        conn.close()


def redis_ids(h: Harness, ids: set[str]) -> set[str]:
    ordered = sorted(ids)
    pipe = h.cache.pipeline(transaction=False)
    for cid in ordered:
        pipe.exists(f"sophia:gong_calls_enriched:{cid}")
    return {cid for cid, found in zip(ordered, pipe.execute(), strict=True) if found}


def wait_landed_once(h: Harness, ids: set[str], timeout: float = 60) -> None:
    """Every id in every target, exactly one row each."""
    h.wait(lambda: set(pg_ids(h, ids)) == ids, timeout, f"{len(ids)} calls in PostgreSQL")
    h.wait(lambda: set(sf_ids(h, ids)) == ids, timeout, f"{len(ids)} calls in Snowflake")
    h.wait(lambda: redis_ids(h, ids) == ids, timeout, f"{len(ids)} calls in Redis")
    assert max(pg_ids(h, ids).values()) == 1
    assert max(sf_ids(h, ids).values()) == 1, "a call has two rows in Snowflake"


def checkpoint(h: Harness, source: str) -> dict[str, Any] | None:
    conn = h.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('sophia_backfill_checkpoints')")
            if cur.fetchone()[0] is None:
                return None
            cur.execute("SELECT status, published, skipped, position, line, cursor, page FROM "
                        "sophia_backfill_checkpoints WHERE source = %s ORDER BY updated_at DESC LIMIT 1", (source,))
            row = cur.fetchone()
            if row is None:
                return None
            return dict(zip(("status", "published", "skipped", "position", "line", "cursor", "page"), row, strict=True))
    finally:
        conn.close()


def run_json(h: Harness, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run([SOPHIA, *args, "--json"], env=env or h.env, capture_output=True, text=True, timeout=120)
    out = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None
    return proc.returncode, out, proc.stderr


def write_ndjson(path: Path, items: list[Any], bad: dict[int, str] | None = None) -> None:
    """Items as NDJSON; ``bad`` inserts raw bad lines before the given item indexes."""
    bad = bad or {}
    with open(path, "w", encoding="utf-8") as f:
        for i, item in enumerate(items):
            if i in bad:
                f.write(bad[i] + "\n")
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


# -- from a file -----------------------------------------------------------------------------
def test_thousand_calls_from_a_file_land_once_and_a_second_run_publishes_nothing(harness: Harness,
                                                                                  tmp_path: Path) -> None:
    calls = generate_calls(1000, seed=5105)
    # The three shapes an item can have: bare calls, the envelope, Gong's automation-rule body.
    items: list[Any] = []
    for i, call in enumerate(calls):
        if i % 3 == 1:
            items.append({"type": "call_completed", "data": call})
        elif i % 3 == 2:
            items.append({"callData": call, "isTest": False})
        else:
            items.append(call)
    path = tmp_path / "calls.ndjson"
    write_ndjson(path, items, bad={10: "{not json", 500: "[1, 2]", 900: '{"type": "call_completed"}'})
    ids = {c["metaData"]["id"] for c in calls}

    started = time.monotonic()
    rc, summary, err = run_json(harness, "backfill", "--file", str(path))
    assert rc == 0, err
    assert summary is not None and summary["status"] == "done"
    assert summary["published"] == 1000 and summary["already_done"] == 0
    assert summary["skipped_bad"] == 3
    assert [e.split(":")[0] for e in summary["bad_examples"]] == ["line 11", "line 502", "line 903"]
    wait_landed_once(harness, ids, timeout=90)
    landed_after = time.monotonic() - started

    # The worker wrote them through the bulk lane, not the live one.
    assert harness.counter("documents_written", target="postgres", collection="gong_calls_enriched") >= len(ids)

    again = subprocess.run([SOPHIA, "backfill", "--file", str(path)], env=harness.env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "published 0" in again.stdout and "already done 1000" in again.stdout, again.stdout
    assert "skipped bad 3" in again.stdout and "line 11" in again.stdout
    cp = checkpoint(harness, str(path.resolve()))
    assert cp is not None and cp["status"] == "done" and cp["published"] == 1000
    assert landed_after < 90


def test_a_killed_backfill_resumes_and_finishes_without_duplicates(harness: Harness, tmp_path: Path) -> None:
    calls = [gong_call(title=f"resume {i}") for i in range(600)]
    ids = {c["metaData"]["id"] for c in calls}
    path = tmp_path / "resume.ndjson"
    write_ndjson(path, calls)
    source = str(path.resolve())

    proc = subprocess.Popen([SOPHIA, "backfill", "--file", str(path), "--batch-size", "50", "--rate", "250"],
                            env=harness.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        harness.wait(lambda: (checkpoint(harness, source) or {}).get("published", 0) >= 150, 30,
                     "some progress before the kill")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    progress_lines = proc.stderr.read() if proc.stderr else ""
    assert "events published" in progress_lines  # it did report progress before it died
    before = checkpoint(harness, source)
    assert before is not None and before["status"] == "running"
    assert 150 <= before["published"] < 600, before

    rc, summary, err = run_json(harness, "backfill", "--file", str(path), "--batch-size", "50")
    assert rc == 0, err
    assert summary is not None and summary["resumed"] is True
    assert summary["already_done"] == before["published"]
    assert summary["published"] == 600 - before["published"]
    wait_landed_once(harness, ids, timeout=60)
    # Every item went through the chain on the bulk lane and is journaled under its deterministic id.
    event_ids = {canonical_id(c) for c in calls}
    conn = harness.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(DISTINCT event_id), array_agg(DISTINCT lane), array_agg(DISTINCT source) "
                        "FROM sophia_journal WHERE event_id = ANY(%s)", (sorted(event_ids),))
            assert cur.fetchone() == (600, ["bulk"], ["backfill"])
    finally:
        conn.close()


def test_backfill_file_errors_are_one_line_and_non_zero(harness: Harness, tmp_path: Path) -> None:
    missing = harness.cli("backfill", "--file", str(tmp_path / "nope.ndjson"))
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "no such file" in missing.stderr

    strict_path = tmp_path / "strict.ndjson"
    write_ndjson(strict_path, [gong_call(), gong_call()], bad={1: '"just a string"'})
    strict = harness.cli("backfill", "--file", str(strict_path), "--strict")
    assert strict.returncode == 1 and "line 2" in strict.stderr and "--strict" in strict.stderr

    both = harness.cli("backfill", "--file", str(strict_path), "--gong", "--since", "2026-01-01")
    assert both.returncode == 1 and "exactly one" in both.stderr

    array = tmp_path / "calls.json"
    calls = [gong_call(title="from a json array") for _ in range(3)]
    array.write_text(json.dumps([{"type": "call_completed", "data": calls[0]}, calls[1],
                                 {"callData": calls[2], "isTest": False}, 42]))
    rc, summary, err = run_json(harness, "backfill", "--file", str(array))
    assert rc == 0, err
    assert summary is not None and summary["published"] == 3 and summary["skipped_bad"] == 1
    assert summary["bad_examples"][0].startswith("item 4:")
    harness.wait(lambda: set(pg_ids(harness, {c["metaData"]["id"] for c in calls})) ==
                 {c["metaData"]["id"] for c in calls}, 30, "the array's calls")


def test_backfill_keeps_the_items_own_version_so_it_never_overwrites_a_newer_live_update(harness: Harness,
                                                                                         tmp_path: Path) -> None:
    cid = gong_call()["metaData"]["id"]
    live = harness.post({"type": "call_completed", "data": gong_call(cid, title="live v2"),
                         "occurred_at": "2026-11-21T10:00:00Z"})
    assert live.status_code == 202
    harness.wait(lambda: harness.pg_rows(cid) and harness.pg_rows(cid)[0][3] == "live v2", 30, "the live version")
    path = tmp_path / "old.ndjson"
    # An old export of the same call: its own time is older, its started older still.
    write_ndjson(path, [{"type": "call_completed", "data": gong_call(cid, title="backfill v1"),
                         "occurred_at": "2026-11-20T21:00:00Z"}])
    rc, summary, err = run_json(harness, "backfill", "--file", str(path))
    assert rc == 0 and summary is not None and summary["published"] == 1, err
    marker = gong_call()
    marker_path = tmp_path / "marker.ndjson"
    write_ndjson(marker_path, [marker])
    assert run_json(harness, "backfill", "--file", str(marker_path))[0] == 0
    harness.wait(lambda: harness.pg_rows(marker["metaData"]["id"]), 30, "a later backfilled call")
    time.sleep(0.5)
    ((_, doc, published, title),) = harness.pg_rows(cid)
    assert title == "live v2" and doc["_meta"]["source"] == "webhook"
    assert published.isoformat().startswith("2026-11-21T10:00:00")
    # A call without any time of its own is versioned by metaData.started.
    ((_, marker_doc, _, _),) = harness.pg_rows(marker["metaData"]["id"])
    assert marker_doc["_meta"]["published_at"] == "2026-11-20T20:00:00.000000Z"
    assert marker_doc["_meta"]["source"] == "backfill"


def test_celery_call_runs_the_same_backfill_in_the_worker(harness: Harness, tmp_path: Path) -> None:
    calls = [gong_call(title=f"via celery call {i}") for i in range(25)]
    ids = {c["metaData"]["id"] for c in calls}
    path = tmp_path / "celery.ndjson"
    write_ndjson(path, calls)
    out = subprocess.run([CELERY, "-A", "sophia_tasks", "call", "sophia.backfill", "--kwargs",
                          json.dumps({"path": str(path)})], env=harness.env, capture_output=True, text=True,
                         timeout=60, cwd=str(Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "celery call prints the task id"
    wait_landed_once(harness, ids, timeout=60)
    cp = harness.wait(lambda: (checkpoint(harness, str(path.resolve())) or {}).get("status") == "done"
                      and checkpoint(harness, str(path.resolve())), 30, "the worker's checkpoint")
    assert cp["published"] == 25


# -- from Gong ---------------------------------------------------------------------------------
@pytest.fixture()
def gong_env(harness: Harness) -> Iterator[tuple[FakeGong, dict[str, str], list[dict[str, Any]]]]:
    calls = [gong_call(title=f"gong page call {i}") for i in range(20)]
    pages = [calls[0:6], calls[6:12], calls[12:18], calls[18:20]]
    with FakeGong(pages=pages, faults={1: [429], 2: [503, 502]}) as fake:
        env = dict(harness.env, SOPHIA_GONG_API_URL=fake.url, SOPHIA_GONG_ACCESS_KEY=fake.access_key,
                   SOPHIA_GONG_ACCESS_KEY_SECRET=fake.access_key_secret)
        yield fake, env, calls


def test_gong_pages_all_land_429_is_waited_out_and_5xx_retried(
        harness: Harness, gong_env: tuple[FakeGong, dict[str, str], list[dict[str, Any]]]) -> None:
    fake, env, calls = gong_env
    ids = {c["metaData"]["id"] for c in calls}
    rc, summary, err = run_json(harness, "backfill", "--gong", "--since", "2026-11-01", "--until", "2026-12-01",
                                "--batch-size", "7", env=env)
    assert rc == 0, err
    assert summary is not None and summary["published"] == 20 and summary["status"] == "done"
    wait_landed_once(harness, ids, timeout=60)

    served = [r for r in fake.requests if r.status == 200]
    assert [r.page for r in served] == [0, 1, 2, 3]
    assert all(r.authorization and r.authorization.startswith("Basic ") for r in fake.requests)
    first = fake.requests[0].body
    assert first["filter"] == {"fromDateTime": "2026-11-01T00:00:00Z", "toDateTime": "2026-12-01T00:00:00Z"}
    assert "cursor" not in first
    exposed = first["contentSelector"]["exposedFields"]
    assert exposed["parties"] and exposed["content"]["trackers"] and exposed["interaction"]["speakers"]
    # 429 on page 1: the next request waited for Retry-After (1 s).
    statuses = [(r.page, r.status) for r in fake.requests]
    i429 = statuses.index((1, 429))
    assert fake.requests[i429 + 1].at - fake.requests[i429].at >= 0.95
    # Two 5xx on page 2, then it recovered.
    assert statuses.count((2, 503)) == 1 and statuses.count((2, 502)) == 1 and (2, 200) in statuses
    # Never more than 3 requests in any second.
    times = [r.at for r in fake.requests]
    assert all(b - a >= 0.3 for a, b in zip(times, times[1:], strict=False)), times
    assert all(times[i + 3] - times[i] >= 0.95 for i in range(len(times) - 3))

    again = run_json(harness, "backfill", "--gong", "--since", "2026-11-01", "--until", "2026-12-01", env=env)
    assert again[0] == 0 and again[1] is not None and again[1]["published"] == 0 and again[1]["already_done"] == 20


def test_gong_page_that_never_recovers_is_reported_and_the_run_resumes_there(
        harness: Harness, gong_env: tuple[FakeGong, dict[str, str], list[dict[str, Any]]]) -> None:
    fake, env, calls = gong_env
    fake.broken_pages.add(2)
    fake.clear_faults()
    args = ["backfill", "--gong", "--since", "2026-10-01", "--until", "2026-11-30", "--max-retries", "1"]
    failed = subprocess.run([SOPHIA, *args], env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, failed.stderr
    message = errors[0]
    assert "page 3" in message and FakeGong.cursor_of(2) in message and "HTTP 500" in message
    # The two pages before it were published and landed.
    first_ids = {c["metaData"]["id"] for c in calls[:12]}
    wait_landed_once(harness, first_ids, timeout=60)
    assert not pg_ids(harness, {c["metaData"]["id"] for c in calls[12:]})

    fake.broken_pages.clear()
    seen = len(fake.requests)
    rc, summary, err = run_json(harness, *args, env=env)
    assert rc == 0, err
    assert summary is not None and summary["already_done"] == 12 and summary["published"] == 8
    assert fake.requests[seen].body.get("cursor") == FakeGong.cursor_of(2)  # resumed at the failed page
    wait_landed_once(harness, {c["metaData"]["id"] for c in calls}, timeout=60)


def test_gong_backfill_without_credentials_says_so(harness: Harness) -> None:
    env = {k: v for k, v in harness.env.items() if not k.startswith("SOPHIA_GONG_ACCESS")}
    out = subprocess.run([SOPHIA, "backfill", "--gong", "--since", "2026-01-01"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "SOPHIA_GONG_ACCESS_KEY" in out.stderr
    bad_date = subprocess.run([SOPHIA, "backfill", "--gong", "--since", "last tuesday"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert bad_date.returncode == 1 and "--since" in bad_date.stderr


def test_checkpoints_are_listed(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "listed.ndjson"
    write_ndjson(path, [gong_call(title="listed")])
    assert run_json(harness, "backfill", "--file", str(path))[0] == 0
    out = harness.cli("backfill", "--list", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["source"]: r for r in json.loads(out.stdout)}
    assert rows[str(path.resolve())]["status"] == "done" and rows[str(path.resolve())]["published"] == 1
    table = harness.cli("backfill", "--list")
    assert table.returncode == 0 and "checkpoint" in table.stdout
