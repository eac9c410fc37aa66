"""``sophia-tasks dlq ...``: list, show, replay and purge dead letters."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from sophia_tasks.cli.common import fail as _fail
from sophia_tasks.cli.common import guard as _guard
from sophia_tasks.cli.common import settings_or_exit as _settings
from sophia_tasks.cli.common import table as _table
from sophia_tasks.settings import Settings


@click.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


def _store(settings: Settings) -> Any:
    from sophia_tasks.store.deadletter import DeadLetterStore
    from sophia_tasks.store.sealing import sealer_for

    return DeadLetterStore(settings.postgres_dsn, sealer=sealer_for(settings))


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
    rows = [letter.summary() for letter in letters]
    more = f"the oldest {limit} shown; --limit for more" if limit and len(rows) >= limit else None
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        if more:
            click.echo(more, err=True)
        return
    for r in rows:
        r["error"] = (r["error"] or "")[:80]
    _table(rows, ["id", "created_at", "stage", "target", "collection", "document_key", "attempts", "status", "error"],
           title=f"{len(rows)} dead letter(s)" + (f" ({more})" if more else ""))


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
    from sophia_tasks.ops.replay import replay_letters
    from sophia_tasks.pipeline.runtime import build_context

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
