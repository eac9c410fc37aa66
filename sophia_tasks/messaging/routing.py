"""Where each message goes: queue names, lanes and task names, and sending by name.

Publishers (the web app, the batcher, the stages, backfill, replay) send tasks by
name through here, so none of them imports the modules that define the tasks.
"""
from __future__ import annotations

from typing import Any, Protocol

from sophia_tasks.settings import Settings

STAGE_QUEUES = ("sophia.validate", "sophia.derive", "sophia.ops", "sophia.backfill")
INGEST_QUEUE = "sophia.ingest"
LANES = ("live", "bulk")

VALIDATE = "sophia.validate"
DERIVE = "sophia.derive"
MATERIALIZE = "sophia.materialize"
INGEST = "sophia.ingest"


class Sender(Protocol):
    """What sends a task by name: a Celery app (``app.send_task``)."""

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any: ...


def materialize_queue(settings: Settings, target: str, lane: str = "live") -> str:
    """Each target has its own queue per lane, so a slow target or a backfill never delays live writes."""
    if lane == "bulk":
        return settings.queue(f"sophia.backfill.materialize.{target}")
    return settings.queue(f"sophia.materialize.{target}")


def stage_queue(settings: Settings, stage: str, lane: str = "live") -> str:
    """validate and derive of the bulk lane (backfill, rebuild) share the lower-priority backfill queue."""
    if lane == "bulk":
        return settings.queue("sophia.backfill")
    return settings.queue(f"sophia.{stage}")


def materialize_message(settings: Settings, target: str, collection: str, documents: Any, attempt: int = 1,
                        lane: str = "live") -> tuple[list[Any], dict[str, Any], str]:
    """The args, kwargs and queue of a ``sophia.materialize`` message. Only non-default routing
    travels in it. The tasks send it, and so does the batcher in the worker's main process."""
    kwargs: dict[str, Any] = {"attempt": attempt}
    if lane != "live":
        kwargs["lane"] = lane
    return [target, collection, documents], kwargs, materialize_queue(settings, target, lane)


def lane_kwargs(lane: str, targets: list[str] | None) -> dict[str, Any]:
    """Only non-default routing travels in the message, so live messages stay as small as before."""
    kwargs: dict[str, Any] = {}
    if lane != "live":
        kwargs["lane"] = lane
    if targets is not None:
        kwargs["targets"] = list(targets)
    return kwargs


def send_validate(sender: Sender, settings: Settings, events: Any, lane: str = "live",
                  targets: list[str] | None = None, slot: str | None = None) -> None:
    """Hand events to the chain. ``lane="bulk"`` (backfill, rebuild) uses the lower-priority queues;
    ``targets`` limits materialization to those targets (a rebuild of one target); ``slot`` is the
    bulk window slot the batch holds until it is validated (``sophia_tasks.pipeline.bulk_window``)."""
    kwargs = lane_kwargs(lane, targets)
    if slot:
        kwargs["slot"] = slot
    sender.send_task(VALIDATE, args=[events], kwargs=kwargs, queue=stage_queue(settings, "validate", lane))


def send_derive(sender: Sender, settings: Settings, collection: str, documents: list[dict[str, Any]],
                lane: str = "live", targets: list[str] | None = None) -> None:
    sender.send_task(DERIVE, args=[collection, documents], kwargs=lane_kwargs(lane, targets),
                     queue=stage_queue(settings, "derive", lane))


def send_materialize(sender: Sender, settings: Settings, target: str, collection: str, documents: Any,
                     attempt: int = 1, countdown: float | None = None, lane: str = "live") -> None:
    args, kwargs, queue = materialize_message(settings, target, collection, documents, attempt, lane)
    sender.send_task(MATERIALIZE, args=args, kwargs=kwargs, queue=queue, countdown=countdown)
