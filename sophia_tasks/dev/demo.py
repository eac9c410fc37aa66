"""``make demo``: start the stack, push sample Gong calls through the webhook, show
them in Redis, PostgreSQL and Snowflake, print a summary, stop what was started."""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from importlib import resources
from typing import Any

import requests
from rich.console import Console
from rich.table import Table

from sophia_tasks.dev.stack import ROOT, Stack, ensure_services, free_port, port_open

console = Console(width=max(120, Console().width))


def sample_calls() -> list[dict[str, Any]]:
    raw = resources.files("sophia_tasks").joinpath("samples/gong_calls.json").read_text(encoding="utf-8")
    return json.loads(raw)


def demo_env() -> dict[str, str]:
    env = {
        "SOPHIA_WEBHOOK_TOKENS": os.environ.get("SOPHIA_WEBHOOK_TOKENS") or "demo-token",
        "SOPHIA_SNOWFLAKE_DATA_DIR": os.environ.get("SOPHIA_SNOWFLAKE_DATA_DIR") or str(ROOT / "var" / "snowflake"),
    }
    port = int(os.environ.get("PORT", "9009"))
    env["PORT"] = str(port if not port_open("127.0.0.1", port) else free_port())
    return env


def main() -> int:
    ensure_services()
    env = demo_env()
    os.environ.update(env)
    from sophia_tasks.flows import load_spec
    from sophia_tasks.materializers import get_materializer
    from sophia_tasks.settings import load_settings

    settings = load_settings()
    spec = load_spec(settings.flow_path)
    stack = Stack.from_env(env, ROOT / "var" / "demo")
    token = env["SOPHIA_WEBHOOK_TOKENS"].split(",")[0]
    calls = sample_calls()
    started = time.monotonic()
    try:
        with console.status("starting the Snowflake emulator, a worker and the web app..."):
            stack.start_snowflake()
            stack.start_worker(name="demo-worker", concurrency=2)
            stack.start_web(workers=1, threads=4)
        url = f"http://127.0.0.1:{stack.web_port}/estuary/webhook"
        console.print(f"[bold]webhook[/bold] {url}  (processes' logs in var/demo/)")
        console.print(f"  curl -X POST {url} -H 'Authorization: Bearer {token}' "
                      "-d '{\"type\": \"call_completed\", \"data\": {...}}'")
        accepted = 0
        for call in calls:
            # A fresh event id per run: with none, the id is the body's hash, so a second demo within the
            # dedupe window (24 h) was answered "duplicate" and never reached a target that had been reset
            # (a new clone's emulator data), and the demo failed.
            envelope = {"type": "call_completed", "id": f"demo-{uuid.uuid4().hex}", "data": call}
            r = requests.post(url, data=json.dumps(envelope),
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
            if r.status_code not in (200, 202):
                console.print(f"[red]webhook answered {r.status_code}: {r.text}[/red]")
                return 1
            accepted += 1
            console.print(f"  POST call {call['metaData']['id']} -> {r.status_code} {r.json()['status']}")

        ids = [c["metaData"]["id"] for c in calls]
        found: dict[str, dict[str, dict[str, Any]]] = {}
        deadline = time.monotonic() + 90
        with console.status("waiting for every call in every target..."):
            while time.monotonic() < deadline:
                for mat in spec.materializations.values():
                    writer = get_materializer(mat.endpoint, settings, spec)
                    binding = mat.bindings[0]
                    for cid in ids:
                        if cid in found.get(mat.name, {}):
                            continue
                        try:
                            doc = writer.fetch(binding, cid)
                        except Exception:
                            doc = None
                        if doc:
                            found.setdefault(mat.name, {})[cid] = doc
                if all(len(found.get(m, {})) == len(ids) for m in spec.materializations):
                    break
                time.sleep(0.25)
        elapsed = time.monotonic() - started

        for mat in spec.materializations.values():
            binding = mat.bindings[0]
            where = f"{binding.key_prefix}<id>" if mat.endpoint == "redis" else str(binding.table)
            table = Table(title=f"{mat.name} ({mat.endpoint}: {where})")
            for col in ("call id", "title", "risk", "top risk", "summary"):
                table.add_column(col, overflow="fold")
            for cid in ids:
                doc = found.get(mat.name, {}).get(cid)
                if not doc:
                    table.add_row(cid, "[red]missing[/red]", "", "", "")
                    continue
                enr = doc.get("enrichment") or {}
                risks = enr.get("risk_indicators") or []
                table.add_row(cid, str((doc.get("metaData") or {}).get("title", "")),
                              str(enr.get("risk_score", "")), risks[0]["code"] if risks else "-",
                              (enr.get("executive_summary") or "")[:70])
            console.print(table)

        sample = found.get("redis", {}).get(ids[0])
        if sample:
            parties = [{k: p.get(k) for k in ("name", "emailAddress", "phoneNumber") if k in p}
                       for p in sample.get("parties") or []]
            console.print("[bold]PII masked before any target saw it[/bold] (parties of the first call):")
            console.print_json(json.dumps(parties))
            console.print("[bold]next best actions[/bold]:")
            for nba in (sample.get("enrichment") or {}).get("next_best_actions", [])[:3]:
                console.print(f"  {nba.get('priority')}. {nba.get('action')} — {nba.get('reason')}")
        complete = {m: len(found.get(m, {})) for m in spec.materializations}
        console.print(f"[bold]summary[/bold]: {len(calls)} calls sent, {accepted} accepted; found "
                      + ", ".join(f"{m} {n}/{len(ids)}" for m, n in complete.items())
                      + f"; {elapsed:.1f}s including start-up.")
        return 0 if all(n == len(ids) for n in complete.values()) else 1
    finally:
        with console.status("stopping what the demo started..."):
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
