"""``sophia-tasks``: the command line an operator lives in.

Every command exits non-zero with a one-line reason on failure; tabular output
has ``--json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sophia_tasks.cli.common import fail as _fail
from sophia_tasks.cli.common import guard as _guard
from sophia_tasks.cli.common import settings_or_exit as _settings
from sophia_tasks.cli.common import spec_or_exit as _spec
from sophia_tasks.cli.common import table as _table
from sophia_tasks.cli.dlq import dlq
from sophia_tasks.cli.erase import erase_command
from sophia_tasks.cli.flows_schema import apply_command, plan_command
from sophia_tasks.cli.keys import keys
from sophia_tasks.cli.observe import alerts as alerts_command
from sophia_tasks.cli.ops import backfill_command, check_command, rebuild_command
from sophia_tasks.cli.reconcile import reconcile_command
from sophia_tasks.cli.trace import trace_command
from sophia_tasks.core.flowspec import FlowSpecError
from sophia_tasks.flows import load_spec
from sophia_tasks.logs import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sophia-tasks")
def main() -> None:
    """sophia-tasks: capture, validation, derivation and materialization of the flows in the flow spec."""
    configure_logging()


# -- flows -------------------------------------------------------------------------------
@main.group()
def flows() -> None:
    """Inspect and check the flow spec; plan and apply its changes to the tables."""


@flows.command("list")
@click.option("--prefix", default=None, metavar="P", help="Only the flows whose name starts with P.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def flows_list(prefix: str | None, as_json: bool) -> None:
    """List the flows: name, type, reads from, writes to (like flowctl catalog list --flows [--prefix P])."""
    spec = _spec(_settings())
    rows = [r for r in spec.rows() if prefix is None or r["name"].startswith(prefix)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table([dict(r, reads_from=", ".join(r["reads_from"]), writes_to=", ".join(r["writes_to"])) for r in rows],
           ["name", "type", "reads_from", "writes_to", "detail"], title=f"flows in {spec.path}")


@flows.command("validate")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
def flows_validate(path: str | None) -> None:
    """Check a flow spec (default: SOPHIA_FLOW or the shipped one); exit 1 with every problem."""
    target = Path(path) if path else _settings().flow_path
    try:
        spec = load_spec(target)
    except FlowSpecError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"{target}: ok ({len(spec.collections)} collection(s), {len(spec.derivations)} derivation(s), "
               f"{len(spec.materializations)} materialization(s))")


# -- dead letters -----------------------------------------------------------------------
# -- status ----------------------------------------------------------------------------
@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@_guard
def status(as_json: bool) -> None:
    """Per flow and target: lag p50/p99, throughput, errors, dead letters, queue lengths, alerts firing."""
    from sophia_tasks.observe.status import collect_status, render_status

    settings = _settings()
    report = collect_status(settings, _spec(settings))
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    render_status(report)


# -- setup ------------------------------------------------------------------------------
@main.command("migrate")
@_guard
def migrate() -> None:
    """Create the database, the service tables and every target's tables if missing (safe to rerun)."""
    from sophia_tasks.materializers import BindingPaused, get_materializer
    from sophia_tasks.store.db import connections

    settings = _settings()
    spec = _spec(settings)
    connections.get(settings.postgres_dsn)
    for mat in spec.materializations.values():
        writer = get_materializer(mat.endpoint, settings, spec)
        for binding in mat.bindings:
            if hasattr(writer, "ensure_table"):
                try:
                    writer.ensure_table(binding)  # type: ignore[attr-defined]
                except BindingPaused as exc:
                    click.echo(f"{mat.name}: {exc}")
                    continue
                click.echo(f"{mat.name}: table {binding.table} ready")
            else:
                click.echo(f"{mat.name}: keys {binding.key_prefix}* (ttl {binding.ttl_seconds}s)")


@main.command("emulator")
@click.option("--data-dir", default=None, help="Where the emulator keeps its databases (SOPHIA_SNOWFLAKE_DATA_DIR).")
def emulator(data_dir: str | None) -> None:
    """Run the local Snowflake emulator (fakesnow) on SOPHIA_SNOWFLAKE_PORT; dev only.

    If one already answers on that port, say so and stay up without starting a second,
    so `make up` does not fail because a demo or test left one running.
    """
    import os
    import signal
    import time

    from sophia_tasks.dev.stack import BIN, port_open

    settings = _settings()
    port = settings.snowflake.port
    directory = data_dir or settings.snowflake_data_dir
    if port_open("127.0.0.1", port):
        click.echo(f"a Snowflake emulator already answers on 127.0.0.1:{port}; using it")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while port_open("127.0.0.1", port):
            time.sleep(5)
        _fail(f"the emulator on port {port} went away")
    os.makedirs(directory, exist_ok=True)
    click.echo(f"Snowflake emulator on 127.0.0.1:{port}, data in {directory}")
    os.execv(str(BIN / "fakesnow"), [str(BIN / "fakesnow"), "-s", "-p", str(port), "-d", directory])


# -- commands defined in other modules: one add_command line each below --
flows.add_command(plan_command)
flows.add_command(apply_command)
main.add_command(dlq)
main.add_command(keys)
main.add_command(backfill_command)
main.add_command(rebuild_command)
main.add_command(check_command)
main.add_command(reconcile_command)
main.add_command(alerts_command)
main.add_command(erase_command)
main.add_command(trace_command)


if __name__ == "__main__":  # pragma: no cover
    main()
