"""``sophia-tasks reconcile``: what the beat job ``sophia.reconcile`` does, by hand, for a range."""
from __future__ import annotations

import json

import click

from sophia_tasks.cli.common import fail as _fail
from sophia_tasks.cli.common import guard as _guard
from sophia_tasks.cli.common import settings_or_exit as _settings
from sophia_tasks.cli.common import spec_or_exit as _spec


@click.command("reconcile")
@click.option("--since", required=True, metavar="DATE", help="First call start to list (2026-01-05 or ISO-8601).")
@click.option("--until", metavar="DATE", help="List calls started before this (default: now).")
@click.option("--dry-run", is_flag=True, help="Print what is missing or newer at Gong; enqueue nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_guard
def reconcile_command(since: str, until: str | None, dry_run: bool, as_json: bool) -> None:
    """List the calls Gong has in a range; enqueue (bulk lane) those missing here or newer at Gong.

    Exit status 0 when the run finished (whatever it found), 1 when Gong or a store failed.
    """
    from sophia_tasks.ops.backfill import BackfillError
    from sophia_tasks.ops.reconcile import run_reconcile

    settings = _settings()
    spec = _spec(settings)
    try:
        report = run_reconcile(settings, since, until, dry_run=dry_run, spec=spec)
    except BackfillError as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for found in report.found:
            ours = found.our_version or "-"
            click.echo(f"{found.outcome:8} {found.key}  gong {found.gong_version}  ours {ours}")
        counts = report.counts()
        verb = "would enqueue" if dry_run else "enqueued"
        click.echo(f"{report.status}: {report.since} .. {report.until}: {report.listed} call(s) listed at Gong, "
                   f"{counts['missing']} missing, {counts['newer']} newer there; {verb} "
                   f"{counts['missing'] + counts['newer'] if dry_run else report.enqueued}"
                   + (f", {report.skipped_bad} not a call" if report.skipped_bad else ""))
    if report.status != "done":
        _fail(report.error or "reconciliation failed")
