"""A schema change without breakage (issue #16), on real processes: a projection is added to the spec
while events flow; the bindings pause (no dead letter), `flows plan` shows the new columns, `flows
apply` adds and fills them, the writes resume by themselves, and every event lands everywhere.

The test runs a worker and a web app of its own (queues under their own prefix on the session's
broker, its own flow spec with tables of its own) on the session's Redis, PostgreSQL and Snowflake
emulator, so the spec can change under a live worker without touching the session's tables.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import yaml
from click.testing import CliRunner

from sophia_tasks.cli.main import main
from sophia_tasks.dev.stack import Stack, free_port
from sophia_tasks.flows import load_spec
from sophia_tasks.flows.plan import apply_plan, make_plan
from sophia_tasks.observe.status import collect_status
from sophia_tasks.settings import load_settings
from tests.integration.conftest import TOKEN, Harness, gong_call


def flow_spec(uid: str, with_direction: bool) -> dict[str, Any]:
    pg = {"title": {"from": "/metaData/title", "type": "string"}}
    sf = {"TITLE": {"from": "/metaData/title", "type": "string"}}
    if with_direction:
        pg["direction"] = {"from": "/metaData/direction", "type": "string"}
        sf["DIRECTION"] = {"from": "/metaData/direction", "type": "string"}
    return {
        "version": 1,
        "collections": {"gong_calls": {"schema": "gong_call", "key": "/metaData/id"}},
        "routes": {"call_completed": "gong_calls"},
        "derivations": {"gong_calls_enriched": {"source": "gong_calls", "key": "/metaData/id",
                                                "transform": "sophia_tasks.derivations.gong_enrichment:derive"}},
        "materializations": {
            "plan_redis": {"endpoint": "redis", "bindings": [{"source": "gong_calls_enriched", "resource": {
                "key_prefix": f"plan:{uid}:", "ttl_seconds": 600}}]},
            "plan_pg": {"endpoint": "postgres", "bindings": [{"source": "gong_calls_enriched", "resource": {
                "table": f"plan_calls_{uid}", "key_column": "call_id", "projections": pg}}]},
            "plan_sf": {"endpoint": "snowflake", "bindings": [{"source": "gong_calls_enriched", "resource": {
                "table": f"PLAN_CALLS_{uid.upper()}", "key_column": "CALL_ID", "projections": sf}}]},
        },
    }


class Sender(threading.Thread):
    """Posts a few calls every 0.1 s to the test's web app until stopped; keeps the accepted ids."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.accepted: list[str] = []
        self.refused: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.halt.is_set():
            calls = [gong_call(str(uuid.uuid4().int % 10**18)) for _ in range(3)]
            r = session.post(self.url, data=json.dumps([{"type": "call_completed", "data": c} for c in calls]),
                             headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                             timeout=30)
            if r.status_code == 202:
                self.accepted += [c["metaData"]["id"] for c in calls]
            else:
                self.refused.append(r.status_code)
            self.halt.wait(0.1)


def test_a_new_projection_pauses_until_apply_adds_and_fills_it(harness: Harness, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    pg_table, sf_table = f"plan_calls_{uid}", f"PLAN_CALLS_{uid.upper()}"
    spec_path = tmp_path / "flow.yaml"
    spec_path.write_text(yaml.safe_dump(flow_spec(uid, with_direction=False)))
    env = {**harness.stack.env, "SOPHIA_FLOW": str(spec_path), "SOPHIA_QUEUE_PREFIX": f"plan{uid}.",
           "PORT": str(free_port()), "SOPHIA_INLINE_TARGETS": "plan_redis,plan_pg",
           "SOPHIA_COALESCE_TARGETS": "plan_sf"}
    stack = Stack.from_env(env, tmp_path / "stack")
    sender = Sender(f"http://127.0.0.1:{env['PORT']}/estuary/webhook")

    def cli(*args: str) -> Any:
        """The real command, in this process (a new process costs seconds of imports)."""
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    def pg_rows() -> list[tuple[Any, ...]]:
        conn = harness.pg()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", (pg_table,))
                if cur.fetchone()[0] is None:
                    return []
                cur.execute(f'SELECT * FROM "{pg_table}"')
                cols = [d[0] for d in cur.description]
                return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]  # type: ignore[misc]
        finally:
            conn.close()

    def sf_rows() -> list[dict[str, Any]]:
        conn = harness.sf_connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute(f'SELECT * FROM "{sf_table}"')
            except Exception as exc:
                if "does not exist" in str(exc):
                    return []
                raise
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        finally:
            conn.close()

    def letters() -> list[dict[str, Any]]:
        return [d for t in ("plan_redis", "plan_pg", "plan_sf") for d in harness.dead_letters(target=t)]

    try:
        stack.start_worker(name="worker", concurrency=2)
        stack.start_web(workers=1, threads=2)
        sender.start()
        harness.wait(lambda: len(pg_rows()) >= 10 and len(sf_rows()) >= 10, 30, "rows before the change")

        # The change: a new projection in both SQL bindings, deployed as a worker restart would.
        spec_path.write_text(yaml.safe_dump(flow_spec(uid, with_direction=True)))
        stack.stop("worker")
        stack.start_worker(name="worker", concurrency=2)

        def paused() -> list[dict[str, Any]]:
            raw = harness.cache.hvals("sophia:paused")
            entries = [json.loads(v) for v in raw]
            mine = {e["target"] for e in entries if e["target"] in ("plan_pg", "plan_sf")
                    and time.time() - e["seen"] < 60}
            return entries if mine == {"plan_pg", "plan_sf"} else []

        entries = harness.wait(paused, 30, "both SQL bindings paused")
        reasons = {e["target"]: e["reason"] for e in entries if e["target"].startswith("plan_")}
        assert "column direction (text) is missing" in reasons["plan_pg"]
        assert "column DIRECTION (VARCHAR) is missing" in reasons["plan_sf"]
        assert harness.counter("errors", stage="materialize", target="plan_pg", reason="paused") > 0
        settings = load_settings(env)  # what the commands read, in this process (each command costs seconds)
        spec = load_spec(spec_path)
        report = collect_status(settings, spec)
        assert {p["target"] for p in report["paused"]} >= {"plan_pg", "plan_sf"}
        assert next(t for t in report["targets"] if t["target"] == "plan_pg")["paused"] == ["gong_calls_enriched"]

        plan = make_plan(settings, spec)
        changes = {(c.materialization, c.action, c.column) for c in plan.changes}
        assert changes == {("plan_pg", "add_column", "direction"), ("plan_sf", "add_column", "DIRECTION")}
        readable = cli("flows", "plan")
        assert readable.exit_code == 2 and f"add column direction text to postgres {pg_table}" in readable.stdout

        assert letters() == [], "a paused binding never dead-letters"
        applied = cli("flows", "apply")
        assert applied.exit_code == 0, applied.output
        assert f"of postgres {pg_table}" in applied.stdout and f"of snowflake {sf_table}" in applied.stdout
        written = harness.counter("documents_written", target="plan_pg", collection="gong_calls_enriched")
        harness.wait(lambda: harness.counter("documents_written", target="plan_pg",
                                             collection="gong_calls_enriched") > written, 30, "writes resumed")
        time.sleep(1.0)  # a little live traffic after the resume
        sender.halt.set()
        sender.join(10)
        ids = set(sender.accepted)
        assert ids and not sender.refused

        def everywhere() -> bool:
            pg = {r["call_id"]: r for r in pg_rows()}
            sf = {r["CALL_ID"]: r for r in sf_rows()}
            return (ids <= set(pg) and ids <= set(sf)
                    and all(pg[i]["direction"] == "Outbound" for i in ids)
                    and all(sf[i]["DIRECTION"] == "Outbound" for i in ids))

        harness.wait(everywhere, 45, "every event in PostgreSQL and Snowflake with the new column filled")
        assert len(pg_rows()) == len(ids) and len(sf_rows()) == len(ids)
        assert all(harness.cache.exists(f"plan:{uid}:{i}") for i in ids)
        assert letters() == []
        harness.wait(lambda: not any(json.loads(v)["target"].startswith("plan_")
                                     for v in harness.cache.hvals("sophia:paused")), 30, "the pause cleared")

        assert make_plan(settings, spec).changes == []
        twice = apply_plan(settings, spec, make_plan(settings, spec))
        assert (twice.applied, twice.refused, twice.filled, twice.exit_code) == ([], [], {}, 0)
    finally:
        sender.halt.set()
        stack.stop()

