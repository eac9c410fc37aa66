"""What every command shares: settings and spec or a one-line error, tables, and error guarding."""
from __future__ import annotations

import sys
from typing import Any, Callable

import click

from sophia_tasks.core.flowspec import FlowSpecError
from sophia_tasks.flows import load_spec
from sophia_tasks.materializers.schema import BindingPaused
from sophia_tasks.settings import ConfigError, Settings, load_settings
from sophia_tasks.store.sealing import SealedError


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


def spec_or_exit(settings: Settings) -> Any:
    try:
        return load_spec(settings.flow_path)
    except FlowSpecError as exc:
        fail(str(exc))


def table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
    Console().print(table)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One-line errors for the failures an operator can fix (services down, bad input)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg2
        import redis

        try:
            return fn(*args, **kwargs)
        except psycopg2.OperationalError as exc:
            fail(f"PostgreSQL unreachable: {str(exc).strip().splitlines()[0]}")
        except redis.RedisError as exc:
            fail(f"Redis unreachable: {exc}")
        except (FlowSpecError, ConfigError, SealedError, BindingPaused) as exc:
            fail(str(exc))

    return wrapper
