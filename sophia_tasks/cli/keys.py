"""``sophia-tasks keys ...``: the Fernet keys that seal the journal and the dead letters at rest."""
from __future__ import annotations

import json

import click

from sophia_tasks.cli.common import fail, guard, settings_or_exit


@click.group("keys")
def keys() -> None:
    """Keys sealing stored payloads (SOPHIA_DATA_KEYS: the first seals, every one opens)."""


@keys.command("new")
def keys_new() -> None:
    """Print a new key. To rotate: put it first in SOPHIA_DATA_KEYS, keep the old ones after it,
    restart the workers, run `keys rotate`, then drop the old keys."""
    from sophia_tasks.store.sealing import new_key

    click.echo(new_key())


@keys.command("rotate")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@guard
def keys_rotate(batch_size: int, as_json: bool) -> None:
    """Seal every journal row and dead letter with the first key (older keys' rows and clear rows).

    Safe to stop and run again: each batch commits on its own, and rows already sealed with the
    first key are left alone.
    """
    from sophia_tasks.ops.rekey import reseal_dead_letters, reseal_journal

    settings = settings_or_exit()
    if not settings.data_keys:
        fail("SOPHIA_DATA_KEYS is not set: there is no key to seal with (`sophia-tasks keys new` prints one)")
    results = []
    for reseal in (reseal_journal, reseal_dead_letters):
        summary = reseal(settings, batch_size=batch_size,
                         progress=None if as_json else lambda s: click.echo(f"  {s.line()}", err=True))
        results.append(summary)
        if not as_json:
            click.echo(summary.line())
    if as_json:
        click.echo(json.dumps([{"store": s.store, "seen": s.seen, "resealed": s.resealed} for s in results]))
