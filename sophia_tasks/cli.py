"""``sophia-tasks``: the command line an operator lives in.

Every command exits non-zero with a one-line reason on failure; tabular output
has ``--json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from sophia_tasks.flowspec import FlowSpecError, load_spec
from sophia_tasks.settings import ConfigError, Settings, load_settings


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _spec(settings: Settings) -> Any:
    try:
        return load_spec(settings.flow_path)
    except FlowSpecError as exc:
        _fail(str(exc))


def _table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
    Console().print(table)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One-line errors for the failures an operator can fix (services down, bad input)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg2
        import redis

        try:
            return fn(*args, **kwargs)
        except psycopg2.OperationalError as exc:
            _fail(f"PostgreSQL unreachable: {str(exc).strip().splitlines()[0]}")
        except redis.RedisError as exc:
            _fail(f"Redis unreachable: {exc}")
        except (FlowSpecError, ConfigError) as exc:
            _fail(str(exc))

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sophia-tasks")
def main() -> None:
    """sophia-tasks: webhook capture, validation, enrichment and materialization of Gong calls."""


# -- flows -------------------------------------------------------------------------------
@main.group()
def flows() -> None:
    """Inspect and check the flow spec (collections, derivations, materializations)."""


@flows.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def flows_list(as_json: bool) -> None:
    """List the flows: name, type, reads from, writes to (like flowctl catalog list --flows)."""
    spec = _spec(_settings())
    rows = spec.rows()
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
@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


def _store(settings: Settings) -> Any:
    from sophia_tasks.deadletter import DeadLetterStore

    return DeadLetterStore(settings.postgres_dsn)


def _age(value: str | None) -> float | None:
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1] in units:
            return float(value[:-1]) * units[value[-1]]
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an age like 30s, 15m, 2h or 7d") from None


_filters = [
    click.option("--stage", type=click.Choice(["validate", "derive", "materialize"]), help="Only this stage."),
    click.option("--target", help="Only this target (materialization name)."),
    click.option("--older-than", help="Only letters older than this age (30s, 15m, 2h, 7d)."),
]


def _with_filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(_filters):
        fn = opt(fn)
    return fn


@dlq.command("list")
@_with_filters
@click.option("--status", type=click.Choice(["pending", "replayed", "all"]), default="pending", show_default=True)
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_guard
def dlq_list(stage: str | None, target: str | None, older_than: str | None, status: str, limit: int,
             as_json: bool) -> None:
    """List dead letters, oldest first."""
    letters = _store(_settings()).list(status=status, stage=stage, target=target,
                                       older_than_seconds=_age(older_than), limit=limit)
    rows = [l.summary() for l in letters]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        r["error"] = (r["error"] or "")[:80]
    _table(rows, ["id", "created_at", "stage", "target", "collection", "document_key", "attempts", "status", "error"],
           title=f"{len(rows)} dead letter(s)")


@dlq.command("show")
@click.argument("letter_id", type=int)
@_guard
def dlq_show(letter_id: int) -> None:
    """Show one letter whole: payload, stage, target, every error."""
    letter = _store(_settings()).get(letter_id)
    if letter is None:
        _fail(f"no dead letter with id {letter_id}")
    click.echo(json.dumps(letter.full(), indent=2, default=str, ensure_ascii=False))


@dlq.command("replay")
@click.argument("letter_ids", type=int, nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every pending letter (with the filters).")
@click.option("--stage", type=click.Choice(["validate", "derive", "materialize"]))
@click.option("--target")
@click.option("--payload", "payload_file", type=click.Path(exists=True, dir_okay=False),
              help="Replace the letter's document with this JSON file first (one letter only): the fix.")
@click.option("--json", "as_json", is_flag=True)
@_guard
def dlq_replay(letter_ids: tuple[int, ...], replay_all: bool, stage: str | None, target: str | None,
               payload_file: str | None, as_json: bool) -> None:
    """Put letters back into the chain at the stage each one failed."""
    from sophia_tasks.pipeline import build_context
    from sophia_tasks.replay import replay_letters

    if not letter_ids and not replay_all:
        _fail("name letter ids or pass --all")
    settings = _settings()
    ctx = build_context(settings)
    if payload_file:
        if len(letter_ids) != 1:
            _fail("--payload needs exactly one letter id")
        try:
            fixed = json.loads(Path(payload_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _fail(f"{payload_file}: not readable JSON: {exc}")
        letter = ctx.dlq.get(letter_ids[0])
        if letter is None:
            _fail(f"no dead letter with id {letter_ids[0]}")
        ctx.dlq.replace_payload(letter.id, fixed)
    ids = list(letter_ids) or None
    if ids:
        missing = [i for i in ids if ctx.dlq.get(i) is None]
        if missing:
            _fail(f"no dead letter with id {', '.join(map(str, missing))}")
    sent = replay_letters(ctx, ids, stage=stage, target=target)
    if as_json:
        click.echo(json.dumps({"replayed": sent}))
    else:
        click.echo(f"replayed {sent} letter(s)")


@dlq.command("purge")
@_with_filters
@click.option("--status", type=click.Choice(["pending", "replayed", "all"]), default="replayed", show_default=True,
              help="Which letters to delete.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_guard
def dlq_purge(stage: str | None, target: str | None, older_than: str | None, status: str, yes: bool) -> None:
    """Delete letters (by default only those already replayed)."""
    store = _store(_settings())
    n = len(store.list(status=status, stage=stage, target=target, older_than_seconds=_age(older_than), limit=None))
    if n == 0:
        click.echo("nothing to purge")
        return
    if not yes and not click.confirm(f"delete {n} {status} letter(s)?", default=False):
        _fail("aborted")
    deleted = store.purge(status=None if status == "all" else status, stage=stage, target=target,
                          older_than_seconds=_age(older_than))
    click.echo(f"purged {deleted} letter(s)")


# -- status ----------------------------------------------------------------------------
@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@_guard
def status(as_json: bool) -> None:
    """Per flow and target: lag p50/p99, throughput, errors, dead letters, queue lengths, alerts firing."""
    from sophia_tasks.status import collect_status, render_status

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
    from sophia_tasks.db import connections
    from sophia_tasks.materializers import get_materializer

    settings = _settings()
    spec = _spec(settings)
    connections.get(settings.postgres_dsn)
    for mat in spec.materializations.values():
        writer = get_materializer(mat.endpoint, settings, spec)
        for binding in mat.bindings:
            if hasattr(writer, "ensure_table"):
                writer.ensure_table(binding)  # type: ignore[attr-defined]
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

    from sophia_tasks.stack import BIN, port_open

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
from sophia_tasks.ops_cli import backfill_command, check_command, rebuild_command  # noqa: E402
main.add_command(backfill_command)
main.add_command(rebuild_command)
main.add_command(check_command)
from sophia_tasks.observe_cli import alerts as alerts_command  # noqa: E402
main.add_command(alerts_command)


if __name__ == "__main__":  # pragma: no cover
    main()
