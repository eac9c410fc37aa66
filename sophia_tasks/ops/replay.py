"""Dead-letter replay: each letter goes back to the stage it failed at."""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from sophia_tasks.messaging import routing
from sophia_tasks.messaging.config import sender_for
from sophia_tasks.pipeline.runtime import Context

log = logging.getLogger(__name__)


def replay_letters(ctx: Context, letter_ids: list[int] | None, status: str = "pending",
                   stage: str | None = None, target: str | None = None, sender: routing.Sender | None = None) -> int:
    """Publish the letters' payloads again, grouped into batches; answer how many went."""
    out = sender or sender_for(ctx.settings, ctx.spec)

    letters = ctx.dlq.list(status=None if letter_ids else status, stage=stage, target=target,
                           ids=list(letter_ids) if letter_ids else None, limit=None)
    if letter_ids:
        letters = [letter for letter in letters if letter.status == "pending"] or letters
    groups: dict[tuple[str, str | None, str], list[Any]] = defaultdict(list)
    for letter in letters:
        groups[(letter.stage, letter.target, letter.collection)].append(letter)
    sent = 0
    for (stage, tgt, collection), batch in groups.items():
        payloads = [letter.payload for letter in batch]
        if stage == "validate":
            routing.send_validate(out, ctx.settings, payloads)
        elif stage == "derive":
            routing.send_derive(out, ctx.settings, collection, payloads)
        elif stage == "materialize" and tgt:
            if tgt not in ctx.spec.materializations:
                log.error("letters %s name target %s, which the flow spec no longer has",
                          [letter.id for letter in batch], tgt)
                continue
            routing.send_materialize(out, ctx.settings, tgt, collection, payloads)
        else:
            log.error("letters %s have an unknown stage %s", [letter.id for letter in batch], stage)
            continue
        ctx.dlq.mark_replayed([letter.id for letter in batch])
        sent += len(batch)
    return sent
