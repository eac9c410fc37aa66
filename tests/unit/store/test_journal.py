"""The journal's pure parts: rows for one insert, the retention setting, what feeds a target."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
import yaml

from sophia_tasks.core.flowspec import FlowSpecError
from sophia_tasks.flows import load_spec, parse_spec
from sophia_tasks.ops.rebuild import collections_feeding
from sophia_tasks.settings import DEFAULT_FLOW
from sophia_tasks.store.journal import journal_rows, partition_name

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def event(event_id: str, received: str = "2026-11-25T10:00:00.000000Z", **extra: object) -> dict:
    return {"event_id": event_id, "collection": "gong_calls", "received_at": received,
            "published_at": "2026-11-20T20:00:00.000000Z", "source": "webhook", "is_test": False,
            "document": {"metaData": {"id": "1"}}, **extra}


def test_one_row_per_event_and_received_time_the_last_copy_winning() -> None:
    rows = journal_rows([event("a"), event("b"), event("a", document={"metaData": {"id": "2"}})], "live", NOW)
    assert [r[0] for r in rows] == ["a", "b"]
    assert '"id":"2"' in rows[0][7]  # the later copy of "a"
    assert rows[0][1] == datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    assert rows[0][2:7] == ("gong_calls", "2026-11-20T20:00:00.000000Z", "webhook", "live", False)


def test_the_same_id_received_twice_is_two_rows() -> None:
    rows = journal_rows([event("a"), event("a", received="2026-11-26T10:00:00Z")], "bulk", NOW)
    assert len(rows) == 2 and {r[5] for r in rows} == {"bulk"}


def test_odd_events_are_journaled_sensibly_or_left_to_the_dead_letter_store() -> None:
    no_id = {"collection": "gong_calls", "document": {"metaData": {"id": "1"}}}
    rows = journal_rows([no_id, "not an object", None], "live", NOW)  # type: ignore[list-item]
    assert len(rows) == 1
    assert len(rows[0][0]) == 64 and rows[0][1] == NOW  # sha256 id, journaled at "now"
    assert journal_rows([no_id], "live", NOW)[0][0] == rows[0][0]
    nul = journal_rows([event("n", document={"text": "a\u0000b"})], "live", NOW)
    assert "\\u0000" not in nul[0][7]


def test_partition_names_are_by_day() -> None:
    assert partition_name(date(2026, 1, 5)) == "sophia_journal_p20260105"


def _spec_data() -> dict:
    return yaml.safe_load(DEFAULT_FLOW.read_text(encoding="utf-8"))


def test_retention_comes_from_the_flow_spec() -> None:
    assert load_spec(DEFAULT_FLOW).journal_retention_days == 30
    data = _spec_data()
    data["journal"] = {"retention_days": 7}
    assert parse_spec(data, check_imports=False).journal_retention_days == 7
    data.pop("journal")
    assert parse_spec(data, check_imports=False).journal_retention_days == 30


@pytest.mark.parametrize("journal, problem", [
    ({"retention_days": 0}, "journal.retention_days"),
    ({"retention_days": "30"}, "journal.retention_days"),
    ({"keep": 3}, "journal.keep"),
    ([30], "journal: must be a mapping"),
])
def test_bad_journal_settings_are_spec_errors(journal: object, problem: str) -> None:
    data = _spec_data()
    data["journal"] = journal
    with pytest.raises(FlowSpecError) as err:
        parse_spec(data, check_imports=False)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_a_target_is_fed_by_the_collections_behind_its_bindings() -> None:
    spec = load_spec(DEFAULT_FLOW)
    assert collections_feeding(spec, "postgres") == ["gong_calls", "hubspot_deals"]
    data = _spec_data()
    data["collections"]["other_calls"] = {"schema": "gong_call", "key": "/metaData/id"}
    data["materializations"]["raw"] = {"endpoint": "postgres", "bindings": [
        {"source": "other_calls", "resource": {"table": "other_calls", "key_column": "call_id"}}]}
    spec = parse_spec(data, check_imports=False)
    assert collections_feeding(spec, "raw") == ["other_calls"]
    assert collections_feeding(spec, "redis") == ["gong_calls", "hubspot_deals"]
