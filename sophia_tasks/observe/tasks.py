"""The observability task beat runs: Slack alerts from the flow spec's thresholds."""
from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from sophia_tasks.messaging.config import settings_of, spec_of
from sophia_tasks.observe.alerts import run_checks

log = logging.getLogger(__name__)


@shared_task(name="sophia.alerts", bind=True, ignore_result=True)
def alerts_task(self: Any) -> dict[str, Any]:
    """Beat runs this every SOPHIA_ALERTS_INTERVAL_SECONDS; a failure is logged, the next run retries."""
    report = run_checks(settings_of(self.app), spec_of(self.app))
    if report["fired"] or report["resolved"] or report["failed"]:
        log.info("alerts: fired %s, resolved %s, failed to post %s", report["fired"], report["resolved"],
                 report["failed"])
    return {k: report[k] for k in ("fired", "resolved", "failed", "firing")}
