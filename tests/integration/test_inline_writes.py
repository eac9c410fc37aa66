"""Inline targets (SOPHIA_INLINE_TARGETS): written by the validate task itself, on real Redis and
PostgreSQL; a failed or slow write hands the batch to the target's queue."""
from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import psycopg2
import pytest

from sophia_tasks.ingest.events import make_event
from sophia_tasks.pipeline import batches, fanout, runtime
from sophia_tasks.pipeline import stages as pipeline
from sophia_tasks.settings import load_settings
from tests.integration.conftest import Harness, gong_call


@pytest.fixture
def ctx(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[runtime.Context, list[tuple]]]:
    """A pipeline context on the test stack's databases, in this process; publishes are recorded
    (this process's Celery app may point at another broker), writes are real."""
    # Snowflake through its own message per batch (a claim check), as with SOPHIA_COALESCE_TARGETS="";
    # the coalesced path is tested at the end of this module and in test_target_buffer.py.
    context = runtime.build_context(load_settings().with_overrides(coalesce_targets=()))
    sent: list[tuple] = []
    refs: list[Any] = []  # every claim sent, for the clean-up (tests clear ``sent``)

    def record(target: str, collection: str, documents: Any, attempt: int = 1, countdown: Any = None,
               lane: str = "live") -> None:
        sent.append((target, collection, documents, attempt))
        refs.append(documents)

    monkeypatch.setattr(fanout, "send_materialize", record)
    monkeypatch.setattr(fanout, "_inline_off", {})
    yield context, sent
    # Nothing delivers the recorded messages: drop their claim checks, as their tasks would have.
    for ref in refs:
        if isinstance(ref, dict) and "$batch" in ref:
            context.claims.client.delete(ref["$batch"], ref["$batch"] + ":pending")


def validated(context: runtime.Context, n: int) -> list[dict[str, Any]]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    events = [make_event("gong_calls", gong_call(), uuid.uuid4().hex, stamp, None, "webhook")
              for _ in range(n)]
    return pipeline.validate_events(context.spec, events).documents["gong_calls"]



def test_inline_targets_are_written_before_the_task_returns(harness: Harness, ctx: Any) -> None:
    context, sent = ctx
    docs = validated(context, 5)
    ids = [d["metaData"]["id"] for d in docs]
    batches.derive_and_fan_out(context, "gong_calls", docs, "live", None, f"t-{uuid.uuid4().hex[:8]}")
    # Written here, synchronously: no worker was involved for these two.
    assert all(harness.redis_doc(i) for i in ids)
    assert harness.pg_count(ids) == 5
    # Only the queued target got a message, carrying a claim check for itself alone.
    assert [(t, c) for t, c, _, _ in sent] == [("snowflake", "gong_calls_enriched")]
    ref = sent[0][2]
    assert ref["n"] == 5
    assert context.claims.client.smembers(ref["$batch"] + ":pending") == {b"snowflake"}


def test_a_locked_table_sends_postgres_to_its_queue_and_redis_is_not_held_back(harness: Harness, ctx: Any) -> None:
    context, sent = ctx
    warm = validated(context, 1)  # the table exists before it is locked
    batches.derive_and_fan_out(context, "gong_calls", warm, "live", None, None)
    sent.clear()
    docs = validated(context, 3)
    ids = [d["metaData"]["id"] for d in docs]
    locker = psycopg2.connect(harness.env["SOPHIA_POSTGRES_DSN"])
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE gong_calls_enriched IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            batches.derive_and_fan_out(context, "gong_calls", docs, "live", None, None)
            took = time.monotonic() - started
            assert all(harness.redis_doc(i) for i in ids)
        locker.rollback()
    finally:
        locker.close()
    assert took < fanout.INLINE_DEADLINE + 3
    assert harness.pg_count(ids) == 0
    # The failed write went the queued way: a retry (attempt 2) of exactly these documents...
    retries = [(t, d, a) for t, _, d, a in sent if t == "postgres"]
    assert len(retries) == 1 and retries[0][2] == 2
    assert sorted(x["metaData"]["id"] for x in context.claims.get(retries[0][1])) == sorted(ids)
    # ...and the next batches skip the inline write for a while.
    assert not fanout.inline_now(context, "postgres") and fanout.inline_now(context, "redis")
    sent.clear()
    more = validated(context, 2)
    batches.derive_and_fan_out(context, "gong_calls", more, "live", None, None)
    assert sorted(t for t, *_ in sent) == ["postgres", "snowflake"]


def test_an_unexpected_error_in_an_inline_write_queues_the_batch(harness: Harness, ctx: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    context, sent = ctx
    real = fanout.write_and_settle

    def broken(c: Any, node: Any, slot: Any, target: str, *args: Any, **kwargs: Any) -> Any:
        if target == "redis":
            raise RuntimeError("stats store went away")
        return real(c, node, slot, target, *args, **kwargs)

    monkeypatch.setattr(fanout, "write_and_settle", broken)
    docs = validated(context, 2)
    batches.derive_and_fan_out(context, "gong_calls", docs, "live", None, None)
    queued = [(t, d, a) for t, _, d, a in sent if t == "redis"]
    assert len(queued) == 1 and queued[0][2] == 1
    assert len(context.claims.get(queued[0][1])) == 2
    assert harness.pg_count([d["metaData"]["id"] for d in docs]) == 2


def test_no_inline_targets_means_every_target_is_queued(harness: Harness, ctx: Any) -> None:
    context, sent = ctx
    context.settings = context.settings.with_overrides(inline_targets=())
    docs = validated(context, 2)
    batches.derive_and_fan_out(context, "gong_calls", docs, "live", None, None)
    assert sorted(t for t, *_ in sent) == ["postgres", "redis", "snowflake"]
    assert len({id(d) for _, _, d, _ in sent}) == 1  # one claim for the three


def test_a_kept_connection_the_server_closed_is_replaced_within_the_write(harness: Harness, ctx: Any) -> None:
    """After a PostgreSQL restart or pg_terminate_backend, the next write must not fail (and so not
    turn inline writing off): it retries once on a fresh connection."""
    import os

    context, sent = ctx
    batches.derive_and_fan_out(context, "gong_calls", validated(context, 1), "live", None, None)
    admin = psycopg2.connect(harness.env["SOPHIA_POSTGRES_DSN"])
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                    (f"sophia-tasks:{os.getpid()}",))
        assert cur.fetchone()[0] >= 1
    admin.close()
    sent.clear()
    docs = validated(context, 3)
    batches.derive_and_fan_out(context, "gong_calls", docs, "live", None, None)
    assert harness.pg_count([d["metaData"]["id"] for d in docs]) == 3
    assert [t for t, *_ in sent] == ["snowflake"] and fanout.inline_now(context, "postgres")


def test_a_coalesced_target_gets_no_message_its_documents_go_to_its_buffer(
        harness: Harness, ctx: Any) -> None:
    """With the default settings Snowflake is coalesced: the batch is appended to its target buffer,
    which the test stack's worker cuts and writes."""
    _, sent = ctx
    context = runtime.build_context(load_settings())
    docs = validated(context, 4)
    ids = [d["metaData"]["id"] for d in docs]
    batches.derive_and_fan_out(context, "gong_calls", docs, "live", None, f"t-{uuid.uuid4().hex[:8]}")
    assert sent == []
    assert all(harness.redis_doc(i) for i in ids) and harness.pg_count(ids) == 4
    for i in ids:
        harness.wait(lambda i=i: harness.sf_rows(i), 30, "the coalesced batch in Snowflake")
