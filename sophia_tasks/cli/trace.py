"""``sophia-tasks trace ID``: where an event is, or every traced event of a document key."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from sophia_tasks.cli.common import guard, settings_or_exit, spec_or_exit


@click.command("trace")
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@guard
def trace_command(ident: str, as_json: bool) -> None:
    """Trace an event id (receipt, dedupe, batch, validate, derive, each target) or a document key
    (its events newest first, and each target's current version). Exit 1 when neither is known."""
    from sophia_tasks.observe.trace import not_found_message, reader_for

    settings = settings_or_exit()
    reader = reader_for(settings, spec_or_exit(settings))
    found: dict[str, Any] | None = reader.event(ident)
    kind = "event"
    if found is None:
        found = reader.key(ident)
        kind = "key"
    if found is None:
        click.echo(not_found_message(settings, f"event or key {ident!r}"), err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
    elif kind == "event":
        _print_event(found)
    else:
        _print_key(found)


def _print_event(t: dict[str, Any], indent: str = "") -> None:
    r, d = t["received"], t["dedupe"]
    click.echo(f"{indent}event {t['event_id']}  collection {t['collection']}  key {t['key']}")
    click.echo(f"{indent}  received  {r['at']}  source {r['source']}  credential {r['credential']}  "
               f"lane {r['lane']}")
    dup = f", {d['duplicates']} duplicate(s), last {d['last_duplicate_at']}" if d["duplicates"] else ""
    click.echo(f"{indent}  dedupe    {d['result']}{dup}")
    b = t["batch"]
    click.echo(f"{indent}  batch     validate task {b['validate_task']}  cut {b['cut']}")
    for stage in ("validate", "derive"):
        s = t[stage]
        click.echo(f"{indent}  {stage:<9} {s['result']}  at {s['at']}  took {_secs(s['took_s'])}")
        _print_letter(s.get("dead_letter"), indent + "            ")
    for name, info in t["targets"].items():
        line = f"{indent}  {name:<9} {info['status']}"
        if info.get("version"):
            line += f"  version {info['version']}  at {info['written_at']}  took {_secs(info.get('took_s'))}"
        if info.get("attempts"):
            line += f"  attempts {info['attempts']}"
        click.echo(line)
        failure = info.get("last_failure")
        if failure:
            click.echo(f"{indent}            last failure at {failure['at']} (attempt {failure['attempt']}, "
                       f"{failure['reason']}, then {failure['then']})")
        _print_letter(info.get("dead_letter"), indent + "            ")
    if not t.get("trace_recorded"):
        click.echo(f"{indent}  (no trace record: joined from the journal and the dead letters only)")


def _print_letter(letter: dict[str, Any] | None, indent: str) -> None:
    if letter:
        click.echo(f"{indent}dead letter {letter['id']} ({letter['status']}): {letter['error']}")


def _print_key(k: dict[str, Any]) -> None:
    click.echo(f"key {k['key']}: {len(k['events'])} event(s), newest first ({k['kept_for']})")
    for name, cur in k["current"].items():
        if "error" in cur:
            click.echo(f"  current {name:<9} unreadable: {cur['error']}")
        else:
            click.echo(f"  current {name:<9} version {cur.get('version')}  event {cur.get('event_id')}")
    for t in k["events"]:
        click.echo("")
        _print_event(t, "  ")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"
