"""Worker signals: what the main process does before the pool forks and after it names itself."""
from __future__ import annotations

import gc
import logging
from typing import Any

import redis as redis_lib
from celery.signals import celeryd_after_setup, worker_init

from sophia_tasks.messaging.config import settings_of, spec_of
from sophia_tasks.pipeline.bulkhead import clear_node
from sophia_tasks.pipeline.stages import warm_derivations

log = logging.getLogger(__name__)


@celeryd_after_setup.connect
def _clear_stale_slots(sender: str, instance: Any = None, **kwargs: Any) -> None:
    """Slots held by a worker that was killed under this node name would otherwise block it for minutes."""
    settings = settings_of()
    client = redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        n = clear_node(client, sender)
        if n:
            log.info("cleared %d stale bulkhead slot set(s) of %s", n, sender)
    finally:
        client.close()


@celeryd_after_setup.connect
def _warn_clear_payloads(sender: str, instance: Any = None, **kwargs: Any) -> None:
    """Once per worker start: the journal and the dead letters hold PII; say so when nothing seals them."""
    if not settings_of().data_keys:
        log.warning("SOPHIA_DATA_KEYS is not set: the journal and the dead letters keep events, with their PII, "
                    "in clear (`sophia-tasks keys new` prints a key)")


#: Allocations between young-generation collections (CPython's default is 700).
GC_THRESHOLD = (50_000, 20, 20)


@worker_init.connect
def _prepare_pool(**kwargs: Any) -> None:
    """Before the pool forks: fewer cycle collections, and the Snowflake connector imported.

    Why the collector: decoding a batch of 500 calls builds ~150,000 dicts and lists, which at
    the default threshold triggers hundreds of collections that rescan the heap (measured:
    orjson decodes our batches at 114 MB/s by default, 215 MB/s with this threshold; the
    pipeline's documents are trees, reference counting frees them; the tasks themselves pause the
    collector per batch, ``StageTask.__call__``, so this governs the rest). ``gc.freeze()`` moves what
    start-up built out of every future scan, and keeps those pages shared after the fork.
    Why the connector: otherwise every pool child pays ~2 s of imports on its first Snowflake
    batch, and again after each memory recycle. The derivations build their compiled configs here
    for the same reason (``stages.warm_derivations``).
    """
    warm_derivations(spec_of())
    if any(m.endpoint == "snowflake" for m in spec_of().materializations.values()):
        try:
            import snowflake.connector  # noqa: F401
            import snowflake.connector.errors  # noqa: F401
        except ImportError as exc:  # the materializer reports it on first use, with its context
            log.warning("snowflake connector not importable: %s", exc)
    gc.set_threshold(*GC_THRESHOLD)
    gc.freeze()
