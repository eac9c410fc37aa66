"""Operator commands: ``backfill``, ``rebuild`` and ``check`` (registered on ``sophia-tasks`` in cli.py).

Same rules as the rest of the command line: ``--help`` everywhere, a one-line
``error: ...`` and a non-zero exit on failure, ``--json`` where the output is a table.
Long runs draw a rich progress bar on a terminal and print plain progress lines
otherwise (logs, CI, a subprocess), so both a person and a script can follow them.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import click

CHECKS = ("config", "data_keys", "broker", "redis", "postgres", "snowflake")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def _load() -> tuple[Any, Any]:
    """Settings and flow spec, or a one-line exit."""
    from sophia_tasks.core.flowspec import FlowSpecError
    from sophia_tasks.flows import load_spec
    from sophia_tasks.settings import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable
    try:
        spec = load_spec(settings.flow_path)
    except FlowSpecError as exc:
        _fail(f"{exc.path}: {exc.problems[0]}" + (f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1
                                                   else ""))
        raise  # unreachable
    return settings, spec


def _service_error(exc: BaseException) -> str | None:
    """A one-line reason for the failures an operator fixes outside the code (services down)."""
    import psycopg2
    import redis

    try:
        from kombu.exceptions import OperationalError as BrokerError
    except ImportError:  # pragma: no cover
        BrokerError = OSError  # type: ignore[misc,assignment]
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg2.OperationalError):
        return f"PostgreSQL unreachable: {first}"
    if isinstance(exc, redis.RedisError):
        return f"Redis unreachable: {first}"
    if isinstance(exc, BrokerError):
        return f"broker unreachable: {first}"
    return None


# -- progress ----------------------------------------------------------------------------------
class ProgressReporter:
    """A rich bar (rate, ETA) on a terminal; one plain line a second otherwise."""

    def __init__(self, label: str, unit: str, quiet: bool = False) -> None:
        from rich.console import Console

        self.label = label
        self.unit = unit
        self.quiet = quiet
        self.console = Console(stderr=True)
        self.started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        self._last_line = 0.0
        self.published = 0

    def __enter__(self) -> "ProgressReporter":
        if self.quiet or not self.console.is_terminal:
            return self
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                             TextColumn("{task.fields[published]} events"), TextColumn("{task.fields[rate]}/s"),
                             TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(), console=self.console)
        self._bar.__enter__()
        self._task = self._bar.add_task(self.label, total=None, published=0, rate="0")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def rate(self) -> float:
        return self.published / max(1e-6, time.monotonic() - self.started)

    def __call__(self, done: int, total: int, published: int) -> None:
        self.published = published
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total or None, published=published,
                             rate=f"{self.rate():,.0f}")
            return
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last_line < 1.0 and not (total and done >= total):
            return
        self._last_line = now
        pct = f"{100.0 * done / total:5.1f}%" if total else "   ?"
        eta = ""
        if total and done and published:
            remaining = (time.monotonic() - self.started) * (total - done) / max(1, done)
            eta = f", ETA {remaining:,.0f}s"
        click.echo(f"{self.label}: {pct} ({done:,}/{total:,} {self.unit}), {published:,} events published, "
                   f"{self.rate():,.0f} events/s{eta}", err=True)


# -- backfill ----------------------------------------------------------------------------------
@click.command("backfill")
@click.option("--file", "file_path", metavar="CALLS.ndjson",
              help="NDJSON (one call or envelope a line) or a .json array of them.")
@click.option("--gong", is_flag=True, help="Read the calls from Gong's API (/v2/calls/extensive).")
@click.option("--since", metavar="DATE", help="--gong: first call start to fetch (2026-01-05 or ISO-8601).")
@click.option("--until", metavar="DATE", help="--gong: fetch calls started before this (default: now, fixed at "
                                               "the first run so a resume asks for the same range).")
@click.option("--restart", is_flag=True, help="Ignore the checkpoint and publish everything again.")
@click.option("--strict", is_flag=True, help="Stop at the first bad item instead of skipping it.")
@click.option("--batch-size", type=click.IntRange(1, 5000), default=500, show_default=True,
              help="Events per sophia.validate task (and per checkpoint).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="At most this many events per second (default: as fast as the broker takes them).")
@click.option("--max-retries", type=click.IntRange(0, 50), default=5, show_default=True,
              help="--gong: retries of one page on 5xx or network errors before it counts as failed.")
@click.option("--collection", metavar="NAME", default=None,
              help="The collection bare calls go to (default: the flow spec's route of call_completed); "
                   "envelopes follow the spec's routes.")
@click.option("--list", "list_checkpoints", is_flag=True, help="List the backfill checkpoints and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (or --list) as JSON on stdout.")
def backfill_command(file_path: str | None, gong: bool, since: str | None, until: str | None, restart: bool,
                     strict: bool, batch_size: int, rate: float | None, max_retries: int, collection: str | None,
                     list_checkpoints: bool, as_json: bool) -> None:
    """Publish historical calls on the bulk lane: resumable (checkpoint in PostgreSQL) and idempotent.

    \b
      sophia-tasks backfill --file CALLS.ndjson
      sophia-tasks backfill --gong --since 2026-01-01 [--until 2026-02-01]

    A second run of a finished backfill publishes nothing (use --restart to force).
    Ctrl-C or a crash keeps the checkpoint: run the same command again to resume.
    """
    from sophia_tasks.ops.backfill import BackfillError, run_file_backfill, run_gong_backfill

    settings, _spec = _load()
    if list_checkpoints:
        _list_checkpoints(settings, as_json)
        return
    if bool(file_path) == bool(gong):
        _fail("give exactly one of --file PATH or --gong --since DATE")
    if file_path and (since or until):
        _fail("--since/--until go with --gong, not --file")
    if gong and not since:
        _fail("--gong needs --since DATE")
    label = "backfill gong" if gong else f"backfill {file_path}"
    reporter = ProgressReporter(label, "calls" if gong else "bytes", quiet=False)
    try:
        with reporter:
            if gong:
                summary = run_gong_backfill(settings, since or "", until, restart=restart, batch_size=batch_size,
                                            progress=reporter, max_retries=max_retries, rate=rate,
                                            collection=collection)
            else:
                summary = run_file_backfill(settings, file_path or "", restart=restart, strict=strict,
                                            batch_size=batch_size, progress=reporter, rate=rate,
                                            collection=collection)
    except BackfillError as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        click.echo(f"interrupted: {reporter.published} event(s) published by this run; the checkpoint keeps "
                   "the place, run the same command to resume", err=True)
        sys.exit(130)
    except Exception as exc:
        reason = _service_error(exc)
        if reason is None:
            raise
        _fail(f"{reason} (the checkpoint keeps the place; rerun to resume)")
        return
    if as_json:
        click.echo(json.dumps(summary.to_dict(), default=str))
    else:
        click.echo(summary.line() + ("" if summary.published or not summary.already_done else
                                     " - the checkpoint says this backfill is complete; --restart to run it again"))
        if summary.skipped_bad:
            click.echo(f"{summary.skipped_bad} bad item(s) skipped; the first {len(summary.bad_examples)}:")
            for example in summary.bad_examples:
                click.echo(f"  {example}")


def _list_checkpoints(settings: Any, as_json: bool) -> None:
    from sophia_tasks.ops.backfill import CheckpointStore

    with CheckpointStore(settings.postgres_dsn) as store:
        rows = store.list()
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} backfill checkpoint(s)")
    for col in ("source", "status", "published", "skipped", "position", "page", "updated_at", "error"):
        table.add_column(col)
    for r in rows:
        table.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in
                        ("source", "status", "published", "skipped", "position", "page", "updated_at", "error")])
    Console().print(table)


# -- rebuild -----------------------------------------------------------------------------------
@click.command("rebuild")
@click.option("--target", required=True, help="The materialization to rebuild (redis, postgres, snowflake, ...).")
@click.option("--since", metavar="DATE", help="Only events received from this date/time on (default: the whole "
                                               "journal, i.e. the retention period).")
@click.option("--until", metavar="DATE", help="Only events received before this date/time.")
@click.option("--batch-size", type=click.IntRange(1, 5000), default=500, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def rebuild_command(target: str, since: str | None, until: str | None, batch_size: int, as_json: bool) -> None:
    """Re-materialize one target from the event journal, without asking Gong.

    The journaled events go through validate/derive again on the bulk lane and are
    written to TARGET only, with their original versions, so last-write-wins holds
    and a newer live write is never overwritten. Missing tables are created first.
    """
    from sophia_tasks.ops.backfill import BackfillError, parse_date
    from sophia_tasks.ops.rebuild import rebuild

    settings, spec = _load()
    if target not in spec.materializations:
        _fail(f"unknown target {target!r}; the flow spec has {', '.join(sorted(spec.materializations))}")
    try:
        start = parse_date(since, "--since")
        end = parse_date(until, "--until")
    except BackfillError as exc:
        _fail(str(exc))
        return
    reporter = ProgressReporter(f"rebuild {target}", "events")
    try:
        with reporter:
            summary = rebuild(settings, spec, target, since=start, until=end, batch_size=batch_size,
                              progress=lambda done, total: reporter(done, total, done))
    except KeyboardInterrupt:
        click.echo("interrupted: the part already published stays; rerun to rebuild again (it is idempotent)",
                   err=True)
        sys.exit(130)
    except Exception as exc:
        reason = _service_error(exc) or _target_error(exc)
        if reason is None:
            raise
        _fail(reason)
        return
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    else:
        click.echo(f"rebuild of {target}: published {summary.published} of {summary.total} journaled event(s) "
                   f"in {summary.batches} batch(es), skipped {summary.skipped_invalid} invalid; the worker "
                   f"writes them on the bulk lane (sophia-tasks status shows progress)")


def _target_error(exc: BaseException) -> str | None:
    from sophia_tasks.materializers import BindingPaused, TransientTargetError

    if isinstance(exc, TransientTargetError):
        return f"target unreachable: {exc}"
    if isinstance(exc, BindingPaused):
        return str(exc)
    return None


# -- check -------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    name: str
    status: str        # ok | warning | unreachable | invalid | skipped
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]


def check_config() -> tuple[CheckResult, Any]:
    """Settings load, the flow spec is valid, and the webhook has some authentication."""
    from sophia_tasks.core.flowspec import FlowSpecError
    from sophia_tasks.flows import load_spec
    from sophia_tasks.settings import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        return CheckResult("config", "invalid", str(exc)), None
    try:
        spec = load_spec(settings.flow_path)
    except FlowSpecError as exc:
        return CheckResult("config", "invalid", f"{exc.path}: {exc.problems[0]}"), settings
    auth = []
    if settings.webhook_tokens:
        auth.append(f"{len(settings.webhook_tokens)} bearer token(s)")
    if settings.webhook_secrets:
        auth.append("Standard Webhooks secret")
    if settings.gong_jwt_public_key:
        auth.append("Gong JWT key")
    if not auth and not settings.insecure_no_auth:
        return CheckResult("config", "invalid", "no webhook authentication: set SOPHIA_WEBHOOK_TOKENS (or "
                                                "SOPHIA_WEBHOOK_SECRET / SOPHIA_GONG_JWT_PUBLIC_KEY)"), settings
    bad = _auth_problems(settings)
    if bad:
        return CheckResult("config", "invalid", "; ".join(bad)), settings
    detail = f"flow {spec.path}; auth: {', '.join(auth) if auth else 'NONE (SOPHIA_INSECURE_NO_AUTH=1)'}"
    return CheckResult("config", "ok", detail), settings


def _auth_problems(settings: Any) -> list[str]:
    """The web app's own checks of the secrets' format (a bad whsec_, a key that is not PEM, a relative URL)."""
    try:
        from web.auth import AuthConfig
    except ImportError:  # the CLI installed without the web package
        return []
    config = AuthConfig(tokens=tuple(t.reveal() for t in settings.webhook_tokens),
                        webhook_secrets=tuple(s.reveal() for s in settings.webhook_secrets),
                        gong_public_key_pem=settings.gong_jwt_public_key, insecure_no_auth=settings.insecure_no_auth,
                        public_url=settings.public_url)
    # Tokens are optional when another method is configured (create_app's rule, checked above).
    return config.problems(require_tokens=False)


def check_broker(settings: Any) -> CheckResult:
    from kombu import Connection

    from sophia_tasks.messaging.config import broker_connection

    url, tls = broker_connection(settings.broker_url)
    conn = Connection(url, connect_timeout=3, ssl=tls,
                      transport_options={"socket_connect_timeout": 3, "max_retries": 0})
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=5)
        return CheckResult("broker", "ok", conn.as_uri())
    except Exception as exc:
        return CheckResult("broker", "unreachable", f"{conn.as_uri()}: {_first_line(exc)}")
    finally:
        conn.release()


def check_redis(settings: Any) -> CheckResult:
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    where = settings.redis_url.split("@")[-1]
    try:
        client.ping()
        return CheckResult("redis", "ok", where)
    except redis.RedisError as exc:
        return CheckResult("redis", "unreachable", f"{where}: {_first_line(exc)}")
    finally:
        client.close()


def check_postgres(settings: Any) -> CheckResult:
    """Connects without creating anything (``migrate`` creates the database and tables)."""
    import psycopg2
    import psycopg2.extensions

    params = psycopg2.extensions.parse_dsn(settings.postgres_dsn)
    where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
    try:
        conn = psycopg2.connect(settings.postgres_dsn, connect_timeout=3)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('server_version')")
                version = cur.fetchone()[0]
        finally:
            conn.close()
        return CheckResult("postgres", "ok", f"{where} (PostgreSQL {version})")
    except psycopg2.OperationalError as exc:
        if "does not exist" in str(exc) and params.get("dbname"):
            try:
                psycopg2.connect(**dict(params, dbname="postgres"), connect_timeout=3).close()
                return CheckResult("postgres", "ok", f"{where}: server reachable, database missing "
                                                     "(sophia-tasks migrate creates it)")
            except psycopg2.Error as inner:
                return CheckResult("postgres", "unreachable", f"{where}: {_first_line(inner)}")
        return CheckResult("postgres", "unreachable", f"{where}: {_first_line(exc)}")


def check_snowflake(settings: Any) -> CheckResult:
    import snowflake.connector

    sf = settings.snowflake
    where = (f"emulator {sf.protocol}://{sf.host}:{sf.port}" if sf.emulator else f"account {sf.account}")
    kwargs = dict(sf.connect_kwargs())
    kwargs["login_timeout"] = min(int(kwargs.get("login_timeout", 15)), 10)
    kwargs["network_timeout"] = min(int(kwargs.get("network_timeout", 60)), 10)
    if sf.emulator:
        # The emulator may not have the database yet (the materializer creates it); check the server only.
        kwargs.pop("database", None)
        kwargs.pop("schema", None)
    try:
        conn = snowflake.connector.connect(**kwargs)
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchone()
        finally:
            conn.close()
        return CheckResult("snowflake", "ok", where)
    except Exception as exc:
        return CheckResult("snowflake", "unreachable", f"{where}: {_first_line(exc)}")


def check_data_keys(settings: Any) -> CheckResult:
    """PII at rest: without SOPHIA_DATA_KEYS the journal and the dead letters hold events in clear."""
    if not settings.data_keys:
        return CheckResult("data_keys", "warning", "SOPHIA_DATA_KEYS is not set: the journal and the dead letters "
                                                   "keep events, with their PII, in clear")
    return CheckResult("data_keys", "ok", f"{len(settings.data_keys)} key(s); the first seals the journal and "
                                          "the dead letters")


def run_checks(only: tuple[str, ...] | list[str] = ()) -> Iterator[CheckResult]:
    wanted = [c for c in CHECKS if not only or c in only]
    config, settings = check_config()
    if "config" in wanted:
        yield config
    probes: dict[str, Callable[[Any], CheckResult]] = {
        "data_keys": check_data_keys, "broker": check_broker, "redis": check_redis, "postgres": check_postgres,
        "snowflake": check_snowflake}
    for name in wanted:
        if name == "config":
            continue
        if settings is None:
            yield CheckResult(name, "skipped", "configuration does not load")
        else:
            yield probes[name](settings)


@click.command("check")
@click.option("--only", multiple=True, type=click.Choice(CHECKS),
              help="Run only these checks (repeatable); default: all of them.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def check_command(only: tuple[str, ...], as_json: bool) -> None:
    """Check configuration and that the broker, Redis, PostgreSQL and Snowflake are reachable.

    Changes nothing (no database or table is created). Exits 1 if any check fails.
    """
    results = list(run_checks(only))
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="sophia-tasks check")
        for col in ("check", "status", "detail"):
            table.add_column(col)
        for r in results:
            colour = {"ok": "green", "warning": "yellow"}.get(r.status, "red")
            table.add_row(r.name, f"[{colour}]{r.status}[/{colour}]", r.detail)
        Console(width=max(120, Console().width)).print(table)
    bad = [r for r in results if r.status not in ("ok", "warning")]
    if bad:
        _fail("; ".join(f"{r.name} {r.status}: {r.detail}" for r in bad))
