"""``sophia-tasks erase --email ADDRESS``: erase a person from every store (registered in cli/main.py)."""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from sophia_tasks.cli.common import fail, guard, settings_or_exit, spec_or_exit


class PhaseProgress:
    """A rich bar per phase on a terminal; otherwise one plain line a second on stderr (logs, CI)."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._last = 0.0

    def __enter__(self) -> "PhaseProgress":
        if not self.quiet and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if self._bar is not None:
            if phase not in self._tasks:
                self._tasks[phase] = self._bar.add_task(phase, total=total)
            self._bar.update(self._tasks[phase], completed=done, total=total)
            return
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last < 1.0 and done not in (0, total):
            return
        self._last = now
        click.echo(f"erase: {phase}: {done:,}" + (f"/{total:,}" if total is not None else ""), err=True)


@click.command("erase")
@click.option("--email", "address", required=True, metavar="ADDRESS", help="The person's e-mail address (any case).")
@click.option("--dry-run", is_flag=True, help="Count what would be erased and delete nothing (still audited, as a "
                                              "dry run).")
@click.option("--by", "requested_by", metavar="NAME", help="Who asks, for the audit row (default: the OS user).")
@click.option("--settle", type=click.FloatRange(0, 600), default=5.0, show_default=True,
              help="Seconds to wait before a second pass over the in-flight payload, the targets and what was "
                   "journaled meanwhile (a batch a worker held in memory during the first pass); 0 = none.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True,
              help="Journal rows and dead letters read and deleted per statement.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@guard
def erase_command(address: str, dry_run: bool, requested_by: str | None, settle: float, batch_size: int,
                  as_json: bool) -> None:
    """Erase every document naming ADDRESS from every target, the journal, the dead letters and the
    payload in flight (GDPR erasure, like Gong's data-privacy API).

    \b
      sophia-tasks erase --email carl@acme.com --dry-run   # counts per store, nothing deleted
      sophia-tasks erase --email carl@acme.com --by "DPO ticket 4711"

    Prints a count per store. Every run, dry or not, writes a row to the sophia_erasures table:
    who, when, the counts, the keys erased and the SHA-256 of the address, never the address
    itself. Safe to run again: a second run finds nothing more.
    """
    from sophia_tasks.core.addresses import AddressError
    from sophia_tasks.ops.erase import erase_address

    settings = settings_or_exit()
    spec = spec_or_exit(settings)
    try:
        with PhaseProgress(quiet=as_json) as progress:
            report = erase_address(settings, spec, address, dry_run=dry_run, by=requested_by,
                                   settle_seconds=settle, batch_size=batch_size, progress=progress)
    except AddressError as exc:
        fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        _print(report)
    if report.errors:
        fail("; ".join(f"{store}: {reason}" for store, reason in report.errors.items())
             + " - fix it and run the same command again")


def _print(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    verb = "would erase" if report.dry_run else "erased"
    table = Table(title=f"{'dry run: ' if report.dry_run else ''}documents {verb} per store")
    table.add_column("store")
    table.add_column("count", justify="right")
    for store, n in report.counts.items():
        table.add_row(store, str(n))
    Console(width=100).print(table)
    click.echo(f"{verb} {report.total} in all; audit row {report.audit_id} (by {report.requested_by}, address "
               f"sha256 {report.email_sha256[:12]}...)")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    sys.stdout.flush()
