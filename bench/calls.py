"""Sample Gong calls with fresh ids, and webhook bodies built from them cheaply.

The calls come from the seeded generator in ``tests/fixtures/gong_generator.py`` when it
is importable (realistic sizes, unicode, PII), else from the samples shipped in
``sophia_tasks/samples/gong_calls.json``. Every event the benchmark sends gets a fresh
call id (digits, as the collection key requires) and a fresh event id, so each event is
exactly one row in every target and nothing is deduplicated away.

Bodies are cut into a prefix / id / middle / call id / suffix template once per base
call, so building the 100,000th body is a ``b"".join`` and not a JSON dump: the load
generator must not be the bottleneck on a 2-core machine.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator

import orjson

EID_MARK = "@@BENCH_EVENT_ID@@"
CID_MARK = "9999999999999999999999999"  # digits: a valid key while it is a placeholder


def base_calls(n: int = 64, seed: int = 7) -> tuple[list[dict[str, Any]], str]:
    """``n`` distinct call bodies and where they came from."""
    try:
        from tests.fixtures.gong_generator import generate_calls

        calls = generate_calls(n * 2, seed=seed)
        seen: set[str] = set()
        out = []
        for c in calls:  # the generator plants retries and updates: keep one per id
            cid = str((c.get("metaData") or {}).get("id"))
            if cid not in seen:
                seen.add(cid)
                out.append(c)
        return out[:n], "tests.fixtures.gong_generator.generate_calls"
    except Exception:
        raw = resources.files("sophia_tasks").joinpath("samples/gong_calls.json").read_text(encoding="utf-8")
        calls = [c for c in json.loads(raw) if (c.get("metaData") or {}).get("id")]
        return calls, "sophia_tasks/samples/gong_calls.json"


def with_id(call: dict[str, Any], call_id: str) -> dict[str, Any]:
    out = dict(call)
    out["metaData"] = dict(call.get("metaData") or {}, id=call_id)
    return out


@dataclass
class Template:
    parts: tuple[bytes, bytes, bytes]

    def render(self, event_id: str, call_id: str) -> bytes:
        return b"".join((self.parts[0], event_id.encode(), self.parts[1], call_id.encode(), self.parts[2]))


def _template(obj: Any) -> Template:
    raw = orjson.dumps(obj)
    a, rest = raw.split(EID_MARK.encode(), 1)
    b, c = rest.split(CID_MARK.encode(), 1)
    return Template((a, b, c))


class Calls:
    """Fresh ids and bodies for one benchmark run."""

    def __init__(self, n_base: int = 64) -> None:
        self.base, self.source = base_calls(n_base)
        # Digits only, unique per run: seconds since the epoch, then a sequence number.
        self.run = f"{int(time.time())}{os.getpid() % 1000:03d}"
        self._seq = itertools.count(1)
        self.single = [_template({"type": "call_completed", "id": EID_MARK, "data": with_id(c, CID_MARK)})
                       for c in self.base]
        self.mean_call_bytes = sum(len(orjson.dumps(c)) for c in self.base) / max(1, len(self.base))

    def next_ids(self, ns: str = "1") -> tuple[str, str]:
        """(event id, call id); ``ns`` is one digit after the run id, so a scenario can count its
        own calls by prefix (the backfill's calls vs. the live load running beside it)."""
        n = next(self._seq)
        return f"bench-{self.run}-{n}", f"{self.run}{ns}{n:09d}"

    def prefix(self, ns: str = "1") -> str:
        return f"{self.run}{ns}"

    def single_body(self) -> tuple[bytes, str, str]:
        """One envelope ``{"type", "id", "data"}``: (body, event id, call id)."""
        eid, cid = self.next_ids()
        t = self.single[int(cid) % len(self.single)]
        return t.render(eid, cid), eid, cid

    def batch_body(self, n: int) -> tuple[bytes, list[str]]:
        """A JSON array of ``n`` envelopes: (body, call ids)."""
        items, cids = [], []
        for _ in range(n):
            eid, cid = self.next_ids()
            items.append(self.single[int(cid) % len(self.single)].render(eid, cid))
            cids.append(cid)
        return b"[" + b",".join(items) + b"]", cids

    def calls(self, n: int, ns: str = "1") -> Iterator[dict[str, Any]]:
        """Plain call objects with fresh ids (backfill files, the naive baseline)."""
        for _ in range(n):
            _, cid = self.next_ids(ns)
            yield with_id(self.base[int(cid) % len(self.base)], cid)

    def events(self, n: int) -> list[dict[str, Any]]:
        """Pipeline events as the webhook would make them (``ingest.events.make_event``)."""
        from sophia_tasks.core.documents import format_version, utcnow
        from sophia_tasks.ingest.events import make_event

        out = []
        for call in self.calls(n):
            now = format_version(utcnow())
            out.append(make_event("gong_calls", call, f"bench-{self.run}-{call['metaData']['id']}", now, now,
                                  source="bench"))
        return out
