"""The readiness verdict from heartbeats and what waits (no broker: the waiting count is given)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from sophia_tasks.observe import workers as w
from sophia_tasks.settings import Settings

NOW = 1_800_000_000.0


class Hash:
    """The two hash commands the heartbeat readers use, over a dict (a unit test has no Redis)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[bytes, bytes]] = {}

    def hset(self, key: str, node: str, value: str) -> None:
        self.data.setdefault(key, {})[node.encode()] = value.encode()

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.data.get(key, {}))

    def hdel(self, key: str, *nodes: Any) -> None:
        for n in nodes:
            self.data.get(key, {}).pop(n if isinstance(n, bytes) else n.encode(), None)


SETTINGS = Settings(ready_worker_seconds=30)


def _verdict(monkeypatch: pytest.MonkeyPatch, client: Hash, waiting: float) -> w.WorkerReadiness:
    monkeypatch.setattr(w, "waiting_events", lambda settings, spec: waiting)
    return w.worker_readiness(SETTINGS, None, client, NOW)  # type: ignore[arg-type]


def test_a_consuming_worker_is_ready_and_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Hash()
    w.record_heartbeat(client, SETTINGS, "w1@h", NOW - 5, 1, 4, NOW - 1)  # type: ignore[arg-type]
    verdict = _verdict(monkeypatch, client, 100)
    assert verdict.ok and verdict.reason is None
    assert verdict.workers == [{"node": "w1@h", "seen_age_s": 1.0, "consumed_age_s": 5.0, "active": 1,
                                "concurrency": 4}]


def test_events_waiting_and_no_worker_is_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = _verdict(monkeypatch, Hash(), 3)
    assert not verdict.ok and "3 message(s)/event(s) wait and no worker node" in verdict.reason


def test_a_stuck_worker_is_listed_but_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Hash()
    w.record_heartbeat(client, SETTINGS, "w1@h", NOW - 31, 4, 4, NOW - 1)  # type: ignore[arg-type]
    verdict = _verdict(monkeypatch, client, 1)
    assert not verdict.ok and "none of the 1 live worker node(s) consumed in the last 30s" in verdict.reason
    assert [x["node"] for x in verdict.workers] == ["w1@h"]


def test_nothing_waiting_is_ready_without_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = _verdict(monkeypatch, Hash(), 0)
    assert verdict.ok and verdict.workers == []


def test_silent_nodes_are_left_out_and_forgotten_after_an_hour() -> None:
    client = Hash()
    w.record_heartbeat(client, SETTINGS, "gone@h", NOW, 0, 1, NOW - 4000)  # type: ignore[arg-type]
    w.record_heartbeat(client, SETTINGS, "quiet@h", NOW, 0, 1, NOW - 60)  # type: ignore[arg-type]
    assert w.read_workers(client, SETTINGS, NOW, seen_within=30) == []  # type: ignore[arg-type]
    w.forget_stale(client, SETTINGS, NOW)  # type: ignore[arg-type]
    assert list(client.hgetall(w.workers_key(SETTINGS))) == [b"quiet@h"]
    assert json.loads(client.hgetall(w.workers_key(SETTINGS))[b"quiet@h"])["concurrency"] == 1


def test_each_queue_prefix_has_its_own_workers() -> None:
    assert w.workers_key(Settings(queue_prefix="bench-")) != w.workers_key(Settings())
