"""Prometheus alert rules generated from the flow spec's ``alerts:`` section.

Why generated: the Slack evaluator (``sophia_tasks.observe.alerts``) and Prometheus must
page on the same conditions with the same thresholds; a hand-kept rules file had drifted
(every target at 300 s of lag while the spec gave Snowflake 15 minutes). One rule per
condition the Slack evaluator checks and per target, with that target's own thresholds and
``for``, over the metrics ``/metrics`` exports (``web/metrics.py``).
``sophia-tasks alerts rules > deploy/prometheus/alerts.yml`` writes the shipped file; a test
fails when the two differ.

Where the two evaluators differ: Prometheus' ``rate``/``increase`` extrapolate over the
range and its ``histogram_quantile`` interpolates like ours, so a value right at a
threshold may fire in one and not the other; the thresholds and comparisons are the same.
"""
from __future__ import annotations

from typing import Any, Iterable

import yaml

from sophia_tasks.core.alert_rules import AlertsConfig

GROUP = "sophia-tasks"
RUNBOOK = "docs/observability.md#runbook"

#: The metric families the rules read: every one is exported by ``web/metrics.py``.
METRICS = (
    "estuary_flow_errors_total",
    "sophia_documents_written_total",
    "estuary_flow_lag_seconds_bucket",
    "sophia_dead_letters_pending",
    "sophia_last_written_timestamp_seconds",
    "sophia_reconciled_total",
    "sophia_metrics_source_up",
    "sophia_binding_paused",
)

HEADER = """\
# Prometheus alert rules for sophia-tasks, GENERATED from the flow spec's `alerts:` section:
#   sophia-tasks alerts rules > deploy/prometheus/alerts.yml
# Do not edit by hand: change the thresholds in the spec (sophia_tasks/flows/default.yaml) and
# regenerate; a test fails when this file differs from the generated rules. The Slack alerts
# (sophia.alerts) evaluate the same conditions with the same thresholds and `for` durations.
# Load with `rule_files: [alerts.yml]`, scraping /metrics with a read token.
# Runbook for every alert: docs/observability.md, "Runbook".
"""


def prom_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: 300 -> 5m, 54000 -> 15h, 90 -> 90s."""
    whole = int(round(seconds))
    if whole <= 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _num(value: float) -> str:
    return f"{value:g}"


def _rule(alert: str, expr: str, hold: float, labels: dict[str, str], summary: str,
          description: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert, "expr": expr}
    if hold > 0:
        rule["for"] = prom_duration(hold)
    rule["labels"] = labels
    rule["annotations"] = {"summary": summary, "description": description, "runbook": RUNBOOK}
    return rule


def rules(config: AlertsConfig, targets: Iterable[str]) -> list[dict[str, Any]]:
    """The rules as data: one per condition and target, in the Slack evaluator's order."""
    w = prom_duration(config.window)
    out: list[dict[str, Any]] = []
    for target in targets:
        th = config.for_target(target)
        hold = config.hold("", target)
        sel = f'target="{target}"'
        # Held documents of a paused binding are not failures: they have their own alert below.
        failed = f'estuary_flow_errors_total{{stage="materialize",reason!="paused",{sel}}}'
        errors = f"sum(rate({failed}[{w}]))"
        written = f"sum(rate(sophia_documents_written_total{{{sel}}}[{w}]))"
        if th.error_rate is not None:
            out.append(_rule(
                "SophiaTargetErrorRate",
                f"({errors} / ({errors} + {written})) >= {_num(th.error_rate)}"
                f" and sum(increase({failed}[{w}]))"
                f" >= {th.min_errors}",
                hold, {"severity": "page", "target": target, "kind": "error_rate"},
                f"{target}: {{{{ $value | humanizePercentage }}}} of writes fail",
                f"At least {_num(th.error_rate * 100)}% of the writes to {target} failed over {w} (and at least "
                f"{th.min_errors} failures): they are retried with backoff, then dead-lettered."))
        if th.lag_p99 is not None:
            out.append(_rule(
                "SophiaTargetLagHigh",
                f"histogram_quantile(0.99, sum by (le) (rate(estuary_flow_lag_seconds_bucket{{{sel}}}[{w}])))"
                f" >= {_num(th.lag_p99)}",
                hold, {"severity": "page", "target": target, "kind": "lag"},
                f"{target}: p99 lag {{{{ $value | humanizeDuration }}}}",
                f"Documents reach {target} {prom_duration(th.lag_p99)} or more after the webhook received "
                f"them (p99 over {w})."))
        if th.dead_letters is not None:
            out.append(_rule(
                "SophiaDeadLetters",
                f'sum(sophia_dead_letters_pending{{stage="materialize",{sel}}}) >= {th.dead_letters}',
                hold, {"severity": "ticket", "target": target, "kind": "dead_letters"},
                f"{target}: {{{{ $value }}}} dead letter(s) pending",
                f"Documents {target} refused past their retry budget wait in the dead-letter store: "
                f"`sophia-tasks dlq list --target {target}`, fix, replay."))
        if th.stale_after is not None:
            out.append(_rule(
                "SophiaTargetStale",
                f"time() - sophia_last_written_timestamp_seconds{{{sel}}} > {_num(th.stale_after)}",
                hold, {"severity": "ticket", "target": target, "kind": "stale"},
                f"{target}: no write for {{{{ $value | humanizeDuration }}}}",
                f"Nothing was written to {target} for more than {prom_duration(th.stale_after)}."))
        out.append(_rule(  # always on, as in Slack: a paused binding waits for an operator
            "SophiaBindingPaused", f"max(sophia_binding_paused{{{sel}}}) > 0",
            config.hold("paused", target), {"severity": "page", "target": target, "kind": "paused"},
            f"{target}: a binding is paused",
            f"A table of {target} does not match the flow spec (a projection added or retyped): its documents "
            "are held, not lost. Run `sophia-tasks flows plan`, then `sophia-tasks flows apply`."))
    if config.pipeline_dead_letters is not None:
        out.append(_rule(
            "SophiaDeadLetters",
            f'sum(sophia_dead_letters_pending{{stage=~"validate|derive"}}) >= {config.pipeline_dead_letters}',
            config.hold("dead_letters", "pipeline"), {"severity": "ticket", "target": "pipeline",
                                                      "kind": "dead_letters"},
            "{{ $value }} event(s) failed validation or a derivation",
            "Events failed schema validation or a derivation (bad input) and wait in the dead-letter store: "
            "`sophia-tasks dlq list --stage validate`, fix, replay."))
    if config.reconcile_repaired is not None:
        rw = prom_duration(config.reconcile_window)
        out.append(_rule(
            "SophiaReconcileRepairs",
            f'sum(increase(sophia_reconciled_total{{mode="enqueued"}}[{rw}])) > {config.reconcile_repaired}',
            config.hold("reconcile", "gong"), {"severity": "ticket", "target": "gong", "kind": "reconcile"},
            "Reconciliation with Gong repaired {{ $value | humanize }} call(s)",
            f"More than {config.reconcile_repaired} calls over {rw} were missing here (webhooks dropped) or "
            "older than Gong's version, and were enqueued again: check the webhook's deliveries."))
    out.append(_rule(
        "SophiaMetricsSourceDown", "sophia_metrics_source_up == 0", config.for_seconds,
        {"severity": "ticket", "kind": "metrics_source"},
        "/metrics cannot read {{ $labels.source }}",
        "Part of the metrics is missing (the Redis stats, the broker or the dead-letter store is unreachable "
        "from the web app), so the other rules may be blind."))
    return out


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, as Prometheus' own examples are."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


def render(config: AlertsConfig, targets: Iterable[str]) -> str:
    """The rules file's text (what ``sophia-tasks alerts rules`` prints)."""
    body = yaml.dump({"groups": [{"name": GROUP, "rules": rules(config, targets)}]}, Dumper=_Dumper,
                     sort_keys=False, width=4096, allow_unicode=True, default_flow_style=False)
    return HEADER + body
