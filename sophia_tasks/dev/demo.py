"""``make demo``: start the stack, push the sample calls through the webhook (routed by their envelope
type) and the sample CRM deals through their collection endpoint, show both in Redis, PostgreSQL and
Snowflake, print a summary, stop what was started."""
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


def _sample(name: str) -> list[dict[str, Any]]:
    raw = resources.files("sophia_tasks").joinpath(f"samples/{name}").read_text(encoding="utf-8")
    return json.loads(raw)


def sample_calls() -> list[dict[str, Any]]:
    return _sample("gong_calls.json")


def sample_deals() -> list[dict[str, Any]]:
    return _sample("hubspot_deals.json")


#: What the demo shows of each flow: the derivation its targets bind, and the columns of its tables.
CALLS = "gong_calls_enriched"
DEALS = "hubspot_deals_masked"


def _call_row(key: str, doc: dict[str, Any]) -> list[str]:
    enr = doc.get("enrichment") or {}
    risks = enr.get("risk_indicators") or []
    return [key, str((doc.get("metaData") or {}).get("title", "")), str(enr.get("risk_score", "")),
            risks[0]["code"] if risks else "-", (enr.get("executive_summary") or "")[:70]]


def _deal_row(key: str, doc: dict[str, Any]) -> list[str]:
    props = doc.get("properties") or {}
    contacts = ", ".join(f"{c.get('name')} <{c.get('email')}>" for c in doc.get("contacts") or [])
    return [key, str(props.get("dealname", "")), str(props.get("dealstage", "")), str(props.get("amount", "")),
            contacts or "-"]


SHOWN = {CALLS: (("call id", "title", "risk", "top risk", "summary"), _call_row),
         DEALS: (("deal key", "deal", "stage", "amount", "contacts (masked)"), _deal_row)}


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
    deals = sample_deals()
    started = time.monotonic()
    try:
        with console.status("starting the Snowflake emulator, a worker and the web app..."):
            stack.start_snowflake()
            stack.start_worker(name="demo-worker", concurrency=2)
            stack.start_web(workers=1, threads=4)
        base = f"http://127.0.0.1:{stack.web_port}"
        url = f"{base}/estuary/webhook"
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
        # The deals in one request to their collection's endpoint (a JSON array; fresh ids as above).
        deals_url = f"{base}/v1/collections/hubspot_deals/events"
        r = requests.post(deals_url, data=json.dumps(deals), timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                   "webhook-id": f"demo-{uuid.uuid4().hex}"})
        if r.status_code not in (200, 202):
            console.print(f"[red]{deals_url} answered {r.status_code}: {r.text}[/red]")
            return 1
        accepted += len(deals)
        console.print(f"  POST {len(deals)} deals to {deals_url} -> {r.status_code} {r.json()['status']}")

        wanted = {CALLS: [spec.collection(CALLS).key_of(c) or "" for c in calls],
                  DEALS: [spec.collection(DEALS).key_of(d) or "" for d in deals]}
        total = sum(len(keys) for keys in wanted.values())
        found: dict[str, dict[str, dict[str, Any]]] = {}  # materialization -> key -> document
        deadline = time.monotonic() + 90
        with console.status("waiting for every call and deal in every target..."):
            while time.monotonic() < deadline:
                for mat in spec.materializations.values():
                    writer = get_materializer(mat.endpoint, settings, spec)
                    for source, keys in wanted.items():
                        binding = mat.binding_for(source)
                        for key in keys if binding is not None else ():
                            if key in found.get(mat.name, {}):
                                continue
                            try:
                                doc = writer.fetch(binding, key)
                            except Exception:
                                doc = None
                            if doc:
                                found.setdefault(mat.name, {})[key] = doc
                if all(len(found.get(m, {})) == total for m in spec.materializations):
                    break
                time.sleep(0.25)
        elapsed = time.monotonic() - started

        for mat in spec.materializations.values():
            for source, keys in wanted.items():
                binding = mat.binding_for(source)
                if binding is None:
                    continue
                where = f"{binding.key_prefix}<key>" if mat.endpoint == "redis" else str(binding.table)
                columns, row = SHOWN[source]
                table = Table(title=f"{mat.name} ({mat.endpoint}: {where})")
                for col in columns:
                    table.add_column(col, overflow="fold")
                for key in keys:
                    doc = found.get(mat.name, {}).get(key)
                    table.add_row(*(row(key, doc) if doc else [key, "[red]missing[/red]", "", "", ""]))
                console.print(table)

        ids = wanted[CALLS]
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
        console.print(f"[bold]summary[/bold]: {len(calls)} calls and {len(deals)} deals sent, {accepted} accepted; "
                      "found " + ", ".join(f"{m} {n}/{total}" for m, n in complete.items())
                      + f"; {elapsed:.1f}s including start-up.")
        return 0 if all(n == total for n in complete.values()) else 1
    finally:
        with console.status("stopping what the demo started..."):
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
