"""The backfill loop over files and Gong pages, with an in-memory checkpoint store.

The store is the only database piece; replacing it lets these tests crash a run at
any batch and check what a resumed run publishes, in milliseconds.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sophia_tasks.ops.backfill import BackfillError, Checkpoint, run_file_backfill, run_gong_backfill
from sophia_tasks.ops.gong_api import GongAPIError, GongClient, Page
from sophia_tasks.settings import Settings

SETTINGS = Settings()


class MemoryStore:
    """Checkpoints in a dict; ``save`` copies, so a crash loses exactly what was not saved."""

    def __init__(self) -> None:
        self.rows: dict[str, Checkpoint] = {}
        self.locked: set[str] = set()

    def try_lock(self, key: str) -> bool:
        if key in self.locked:
            return False
        self.locked.add(key)
        return True

    def release(self) -> None:
        self.locked.clear()

    def load(self, key: str) -> Checkpoint | None:
        cp = self.rows.get(key)
        return copy.deepcopy(cp) if cp else None

    def save(self, cp: Checkpoint) -> None:
        self.rows[cp.key] = copy.deepcopy(cp)


def call(i: int) -> dict[str, Any]:
    return {"metaData": {"id": str(1000 + i), "title": f"call {i}", "started": "2026-11-20T15:00:00Z"}}


class Crash(RuntimeError):
    pass


class Publisher:
    def __init__(self, crash_on_batch: int | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.crash_on_batch = crash_on_batch

    def __call__(self, events: list[dict[str, Any]]) -> None:
        if self.crash_on_batch is not None and len(self.batches) + 1 == self.crash_on_batch:
            raise Crash("killed")
        self.batches.append(events)

    @property
    def ids(self) -> list[str]:
        return [e["document"]["metaData"]["id"] for b in self.batches for e in b]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_ndjson_in_batches_then_the_checkpoint_says_done(tmp_path: Path) -> None:
    path = write(tmp_path / "c.ndjson", [json.dumps(call(i)) for i in range(25)] + [""])
    store, pub = MemoryStore(), Publisher()
    summary = run_file_backfill(SETTINGS, path, batch_size=10, publish=pub, store=store)  # type: ignore[arg-type]
    assert [len(b) for b in pub.batches] == [10, 10, 5]
    assert summary.published == 25 and summary.status == "done" and summary.batches == 3
    store.release()
    again = Publisher()
    second = run_file_backfill(SETTINGS, path, batch_size=10, publish=again, store=store)  # type: ignore[arg-type]
    assert again.batches == [] and second.published == 0 and second.already_done == 25
    store.release()
    forced = Publisher()
    third = run_file_backfill(SETTINGS, path, batch_size=10, publish=forced, restart=True,
                              store=store)  # type: ignore[arg-type]
    assert third.published == 25 and len(forced.ids) == 25


def test_a_crash_resumes_after_the_last_published_batch(tmp_path: Path) -> None:
    path = write(tmp_path / "c.ndjson", [json.dumps(call(i)) for i in range(23)])
    store = MemoryStore()
    with pytest.raises(Crash):
        run_file_backfill(SETTINGS, path, batch_size=5, publish=Publisher(crash_on_batch=3),
                          store=store)  # type: ignore[arg-type]
    (cp,) = store.rows.values()
    assert cp.published == 10 and cp.line == 10 and cp.status == "running"
    assert cp.position == sum(len(json.dumps(call(i))) + 1 for i in range(10))
    store.release()
    pub = Publisher()
    summary = run_file_backfill(SETTINGS, path, batch_size=5, publish=pub, store=store)  # type: ignore[arg-type]
    assert pub.ids == [str(1000 + i) for i in range(10, 23)]
    assert summary.resumed and summary.already_done == 10 and summary.published == 13


def test_bad_lines_are_counted_reported_and_skipped(tmp_path: Path) -> None:
    lines = [json.dumps(call(0)), "{broken", json.dumps([1]), json.dumps(call(1)), json.dumps({"type": "x"}),
             json.dumps({"a": 1}), json.dumps({"b": 1}), json.dumps({"c": 1})]
    path = write(tmp_path / "c.ndjson", lines)
    pub = Publisher()
    summary = run_file_backfill(SETTINGS, path, publish=pub, store=MemoryStore())  # type: ignore[arg-type]
    assert pub.ids == ["1000", "1001"]
    assert summary.skipped_bad == 6
    assert len(summary.bad_examples) == 5
    assert summary.bad_examples[0].startswith("line 2: not valid JSON")
    assert summary.bad_examples[1].startswith("line 3: must be a JSON object")


def test_strict_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.ndjson", [json.dumps(call(0)), "nope", json.dumps(call(1))])
    store = MemoryStore()
    with pytest.raises(BackfillError, match="line 2"):
        run_file_backfill(SETTINGS, path, strict=True, publish=Publisher(), store=store)  # type: ignore[arg-type]
    (cp,) = store.rows.values()
    assert cp.status == "failed" and "line 2" in (cp.error or "")


def test_json_arrays_resume_by_item(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"callData": call(i), "isTest": False} for i in range(7)] + [None]))
    store = MemoryStore()
    with pytest.raises(Crash):
        run_file_backfill(SETTINGS, path, batch_size=3, publish=Publisher(crash_on_batch=2),
                          store=store)  # type: ignore[arg-type]
    store.release()
    pub = Publisher()
    summary = run_file_backfill(SETTINGS, path, batch_size=3, publish=pub, store=store)  # type: ignore[arg-type]
    assert pub.ids == [str(1000 + i) for i in range(3, 7)]
    assert summary.skipped_bad == 1 and summary.bad_examples == ["item 8: must be a JSON object, got null"]


def test_a_missing_file_and_a_broken_array_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BackfillError, match="no such file"):
        run_file_backfill(SETTINGS, tmp_path / "missing.ndjson", publish=Publisher(),
                          store=MemoryStore())  # type: ignore[arg-type]
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(BackfillError, match="not valid JSON"):
        run_file_backfill(SETTINGS, broken, publish=Publisher(), store=MemoryStore())  # type: ignore[arg-type]


def test_a_running_backfill_is_not_run_twice(tmp_path: Path) -> None:
    path = write(tmp_path / "c.ndjson", [json.dumps(call(0))])
    store = MemoryStore()
    store.locked.add(f"file:{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}")
    with pytest.raises(BackfillError, match="another backfill"):
        run_file_backfill(SETTINGS, path, publish=Publisher(), store=store)  # type: ignore[arg-type]


def test_an_edited_file_is_a_new_backfill(tmp_path: Path) -> None:
    path = write(tmp_path / "c.ndjson", [json.dumps(call(0))])
    store = MemoryStore()
    run_file_backfill(SETTINGS, path, publish=Publisher(), store=store)  # type: ignore[arg-type]
    store.release()
    write(path, [json.dumps(call(0)), json.dumps(call(1))])
    pub = Publisher()
    run_file_backfill(SETTINGS, path, publish=pub, store=store)  # type: ignore[arg-type]
    assert pub.ids == ["1000", "1001"] and len(store.rows) == 2


# -- Gong ----------------------------------------------------------------------------------------
class ScriptedClient(GongClient):
    """Pages from a list; ``fail_at`` raises GongAPIError for that page (1-based) until cleared."""

    def __init__(self, pages: list[list[dict[str, Any]]], fail_at: int | None = None) -> None:
        super().__init__("http://gong.test", "k", "s", sleep=lambda s: None)
        self.script = pages
        self.fail_at = fail_at
        self.asked: list[str | None] = []

    def fetch_page(self, since: Any, until: Any, cursor: str | None, number: int) -> Page:
        self.asked.append(cursor)
        if number == self.fail_at:
            raise GongAPIError("HTTP 500 after 6 attempt(s)", number, cursor, 500)
        index = number - 1
        nxt = f"c{index + 1}" if index + 1 < len(self.script) else None
        return Page(number=number, cursor=cursor, calls=self.script[index], next_cursor=nxt,
                    total_records=sum(map(len, self.script)))


def test_gong_pages_publish_and_a_failed_page_is_where_the_next_run_starts() -> None:
    pages = [[call(0), call(1)], [call(2)], [call(3), call(4)], [call(5)]]
    store, pub = MemoryStore(), Publisher()
    client = ScriptedClient(pages, fail_at=3)
    with pytest.raises(BackfillError) as err:
        run_gong_backfill(SETTINGS, "2026-11-01", "2026-12-01", batch_size=100, publish=pub, client=client,
                          store=store)  # type: ignore[arg-type]
    assert "page 3 (cursor c2)" in str(err.value)
    assert pub.ids == ["1000", "1001", "1002"]  # the pages before the failure are published
    (cp,) = store.rows.values()
    assert cp.cursor == "c2" and cp.page == 2 and cp.status == "failed"

    store.release()
    client.fail_at = None
    client.asked.clear()
    pub2 = Publisher()
    summary = run_gong_backfill(SETTINGS, "2026-11-01", "2026-12-01", batch_size=100, publish=pub2,
                                client=client, store=store)  # type: ignore[arg-type]
    assert client.asked == ["c2", "c3"]
    assert pub2.ids == ["1003", "1004", "1005"]
    assert summary.already_done == 3 and summary.published == 3 and summary.status == "done"


def test_gong_open_range_is_fixed_at_the_first_run() -> None:
    store = MemoryStore()
    client = ScriptedClient([[call(0)]])
    run_gong_backfill(SETTINGS, "2026-11-01", None, publish=Publisher(), client=client,
                      store=store)  # type: ignore[arg-type]
    (cp,) = store.rows.values()
    assert cp.key.endswith(":open") and cp.params["until"] > "2026-11-01"


def test_gong_range_must_make_sense() -> None:
    with pytest.raises(BackfillError, match="not after"):
        run_gong_backfill(SETTINGS, "2026-12-01", "2026-11-01", publish=Publisher(), client=ScriptedClient([]),
                          store=MemoryStore())  # type: ignore[arg-type]
    with pytest.raises(BackfillError, match="SOPHIA_GONG_ACCESS_KEY"):
        run_gong_backfill(SETTINGS, "2026-11-01", publish=Publisher(), store=MemoryStore())  # type: ignore[arg-type]
