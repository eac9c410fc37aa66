"""`sophia-tasks flows plan` and `flows apply`: change the tables with the flow spec, like flowctl.

Exit codes (as ``terraform plan -detailed-exitcode``): 0 nothing to do, 1 an error (a bad spec,
a store unreachable), 2 changes: for `plan` any change, for `apply` refused changes still waiting
for their manual step.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from sophia_tasks.cli.common import fail, guard, settings_or_exit
from sophia_tasks.core.flowspec import FlowSpecError
from sophia_tasks.flows import load_spec


def _spec_at(path: str | None, settings: Any) -> Any:
    try:
        return load_spec(Path(path) if path else settings.flow_path)
    except FlowSpecError as exc:
        fail(str(exc))


def _planned(settings: Any, spec: Any) -> Any:
    from sophia_tasks.flows.plan import make_plan
    from sophia_tasks.materializers import TransientTargetError

    try:
        return make_plan(settings, spec)
    except TransientTargetError as exc:
        fail(f"cannot read the live tables: {exc}")


@click.command("plan")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@guard
def plan_command(path: str | None, as_json: bool) -> None:
    """Compare the flow spec (PATH, else SOPHIA_FLOW) with the live tables.

    Exit 0 when there is nothing to do, 2 when there are changes, 1 on an error."""
    settings = settings_or_exit()
    plan = _planned(settings, _spec_at(path, settings))
    if as_json:
        click.echo(json.dumps(plan.to_json(), indent=2))
    else:
        click.echo(plan.render())
    sys.exit(plan.exit_code)


class _Progress:
    """One line per second at most while a fill runs, and one when it ends (to stderr)."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, where: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 1.0:
            return
        self.last = now
        pct = f" ({100 * done // total}%)" if total else ""
        click.echo(f"filling {where}: {done:,}/{total:,} rows{pct}", err=True)


@click.command("apply")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Only print the plan (the same as `flows plan`).")
@click.option("--forget", multiple=True, metavar="MATERIALIZATION.TABLE",
              help="Stop reporting a table the spec no longer binds, and keep it as it is (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@guard
def apply_command(path: str | None, dry_run: bool, forget: tuple[str, ...], as_json: bool) -> None:
    """Apply the safe changes (create a table, add a column and fill it); refuse the others with their
    manual step. Safe to rerun; exit 2 while refused changes remain."""
    from sophia_tasks.flows.plan import apply_plan
    from sophia_tasks.materializers import TransientTargetError

    settings = settings_or_exit()
    spec = _spec_at(path, settings)
    plan = _planned(settings, spec)
    if dry_run:
        click.echo(json.dumps(plan.to_json(), indent=2) if as_json else plan.render())
        sys.exit(plan.exit_code)
    try:
        result = apply_plan(settings, spec, plan, progress=None if as_json else _Progress(), forget=forget)
    except TransientTargetError as exc:
        fail(f"a target went away during apply (rerun it: it picks up where it stopped): {exc}")
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        sys.exit(result.exit_code)
    if not result.applied and not result.refused:
        click.echo("No changes: every table matches the flow spec.")
    for c in result.applied:
        click.echo("applied " + c.describe())
    for where, n in result.filled.items():
        click.echo(f"filled {n:,} row(s) of {where}")
    for c in result.refused:
        click.echo("refused " + c.describe())
    if result.refused:
        click.echo(f"{len(result.refused)} change(s) refused: run each manual step above, then `sophia-tasks flows "
                   f"apply` again.")
    sys.exit(result.exit_code)
