"""``sophia-tasks alerts ...``: evaluate the Slack alerts on demand (beat runs the same every minute), and
print the Prometheus rules generated from the same thresholds."""
from __future__ import annotations

import json

import click

from sophia_tasks.cli.common import fail as _fail
from sophia_tasks.cli.common import guard as _guard
from sophia_tasks.cli.common import settings_or_exit as _settings
from sophia_tasks.cli.common import spec_or_exit as _spec


@click.group("alerts")
def alerts() -> None:
    """Alerts to Slack: thresholds from the flow spec's alerts: section."""


@alerts.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--dry-run", is_flag=True, help="Evaluate only: post nothing, change no state, store no snapshot.")
@_guard
def alerts_check(as_json: bool, dry_run: bool) -> None:
    """Evaluate every alert now; post what fired or cleared (once each) to SOPHIA_SLACK_WEBHOOK_URL.

    Exit status 0 when nothing is firing, 2 when an alert is firing, 1 on errors.
    """
    from sophia_tasks.observe.alerts import run_checks

    settings = _settings()
    report = run_checks(settings, _spec(settings), dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"alerts (window {report['window_seconds']:g}s, slack {report['slack']}"
                            + (", dry run" if dry_run else "") + ")", title_justify="left")
        for col in ("alert", "target", "state", "detail"):
            table.add_column(col, no_wrap=col != "detail")
        firing = set(report["firing"])
        for c in report["checks"]:
            state = "unknown" if c["firing"] is None else ("FIRING" if c["key"] in firing or c["firing"] else "ok")
            table.add_row(c["kind"], c["target"], state, c["detail"])
        Console(width=200, soft_wrap=False).print(table)
        for key in report["fired"]:
            click.echo(f"sent: FIRING {key}" if not dry_run else f"would send: FIRING {key}")
        for key in report["resolved"]:
            click.echo(f"sent: RESOLVED {key}" if not dry_run else f"would send: RESOLVED {key}")
    if report["failed"]:
        _fail(f"could not post to Slack: {', '.join(report['failed'])} (the next check retries)")
    if report["firing"]:
        raise SystemExit(2)


@alerts.command("rules")
@click.option("--flow", "flow_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Flow spec to read (default: SOPHIA_FLOW, else the shipped one).")
@_guard
def alerts_rules(flow_path: str | None) -> None:
    """Print the Prometheus alert rules generated from the flow spec's alerts: section.

    The shipped file is made with `sophia-tasks alerts rules > deploy/prometheus/alerts.yml`.
    """
    from pathlib import Path

    from sophia_tasks.observe.alerts import load_alerts_config
    from sophia_tasks.observe.prometheus_rules import render

    settings = _settings()
    if flow_path:
        settings = settings.with_overrides(flow_path=Path(flow_path))
    spec = _spec(settings)
    click.echo(render(load_alerts_config(spec), spec.materializations), nl=False)
