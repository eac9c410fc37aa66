"""Alerts to Slack when a target fails, lags, dead-letters or goes stale; resolved when it clears.

Estuary's users ask for configurable failure alerts (flow#2698) and staleness
alerts per binding (flow#2615); here both come from the flow spec's ``alerts:``
section and are evaluated by the beat-scheduled task ``sophia.alerts`` (or on
demand: ``sophia-tasks alerts check``).

How a rate over a window is computed from counters that only grow: each
evaluation stores a snapshot of the per-target counters in Redis; the window's
numbers are the difference between now and the newest snapshot at least one
window old (or the oldest there is, while the service is younger than a window).
No snapshot yet means "unknown", which neither fires nor resolves.

How a blip is kept quiet: like Prometheus' ``for``, a condition must hold for the
alert's ``for`` duration (``alerts.for`` in the spec, 5m by default) before it is
sent. The first evaluation that sees it firing records when (HSETNX on a second
hash); an evaluation that sees it clear forgets it. The Prometheus rules generated
from the same section (``sophia_tasks.observe.prometheus_rules``) carry the same ``for``.

How a storm is avoided: the state of every alert is a field of one Redis hash.
An alert is sent only by the evaluation that creates its field (HSETNX) and
resolved only by the one that deletes it (HDEL answers 1), so however many
evaluations run, an alert is posted once when it fires and once when it clears.
A failed post gives the state back, so the next evaluation tries again.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import redis as redis_lib
import yaml

from sophia_tasks.core.alert_rules import AlertsConfig, parse_alerts
from sophia_tasks.core.flowspec import FlowSpec, FlowSpecError
from sophia_tasks.observe.counts import diff_counters, empty_counts, lag_quantiles, pending_dead_letters, target_counts
from sophia_tasks.observe.paused import paused_bindings
from sophia_tasks.observe.stats import Stats, parse_field
from sophia_tasks.settings import Settings, reveal

log = logging.getLogger(__name__)

STATE_KEY = "sophia:alerts:state"
PENDING_KEY = "sophia:alerts:pending"  # alert key -> when its condition was first seen holding
RECONCILE = "gong"  # the "target" of the reconciliation alert
SNAPSHOTS_KEY = "sophia:alerts:snapshots"
KINDS = ("error_rate", "lag", "dead_letters", "stale")
PIPELINE = "pipeline"  # the "target" of dead letters from validate and derive (bad input)
# Counters a window needs (per target); everything else stays out of the snapshots.
_WINDOW_COUNTERS = ("errors", "documents_written", "lag_seconds_bucket", "lag_seconds_count", "lag_seconds_sum",
                    "reconciled")


def repaired_count(counters: Mapping[str, float]) -> float:
    """Calls reconciliation enqueued (missing or newer at Gong), dry runs left out."""
    total = 0.0
    for raw, value in counters.items():
        name, labels = parse_field(raw)
        if name == "reconciled" and labels.get("mode") == "enqueued":
            total += value
    return total














def load_alerts_config(spec: FlowSpec) -> AlertsConfig:
    """Read ``alerts:`` from the spec's file each time, so a threshold change needs no restart."""
    try:
        data = yaml.safe_load(Path(spec.path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise FlowSpecError(str(spec.path), [f"alerts: cannot read the spec: {exc}"]) from None
    config, problems = parse_alerts(data.get("alerts") if isinstance(data, Mapping) else None,
                                    spec.materializations)
    if problems:
        raise FlowSpecError(str(spec.path), problems)
    return config


# -- evaluation (pure) ---------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One alert's verdict this time; ``firing`` None means unknown (no change to its state)."""

    kind: str
    target: str
    firing: bool | None
    value: float | None
    threshold: float | None
    detail: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.target}"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def evaluate(config: AlertsConfig, targets: Iterable[str], now: float, current: Mapping[str, float],
             baseline: Mapping[str, float] | None, dead: Mapping[tuple[str, str], int] | None,
             last_written: Mapping[str, float],
             reconcile_baseline: Mapping[str, float] | None = None,
             paused: Iterable[Mapping[str, Any]] | None = None) -> list[Check]:
    """Every alert's verdict from the numbers: no I/O, so every rule is unit-tested.

    ``reconcile_baseline`` is the snapshot one ``alerts.reconcile.window`` old (None: unknown yet).
    ``paused``: the paused bindings (``sophia_tasks.observe.paused``); None when unknown. A paused
    binding always alerts (no threshold): its documents wait until an operator runs `flows apply`.
    Unknown: no paused check at all.
    """
    paused_by_target: dict[str, list[Mapping[str, Any]]] = {}
    for entry in paused or ():
        paused_by_target.setdefault(str(entry.get("target")), []).append(entry)
    window = target_counts(diff_counters(current, baseline)) if baseline is not None else {}
    span = _fmt_s(config.window)
    checks: list[Check] = []
    for target in targets:
        th = config.for_target(target)
        w = window.get(target) or empty_counts()
        if th.error_rate is not None:
            if baseline is None:
                checks.append(Check("error_rate", target, None, None, th.error_rate, "no earlier snapshot yet"))
            else:
                errors, written = max(0.0, w["errors"]), max(0.0, w["written"])
                rate = errors / (errors + written) if errors + written else 0.0
                firing = errors >= th.min_errors and rate >= th.error_rate
                checks.append(Check("error_rate", target, firing, round(rate, 4), th.error_rate,
                                    f"{rate:.1%} of writes failed over the last {span} ({int(errors)} failed, "
                                    f"{int(written)} written; threshold {th.error_rate:.1%} and "
                                    f"{th.min_errors} failures)"))
        if th.lag_p99 is not None:
            if baseline is None:
                checks.append(Check("lag", target, None, None, th.lag_p99, "no earlier snapshot yet"))
            else:
                count = max(0.0, w["lag_count"])
                p99 = lag_quantiles(w)[1] if count > 0 else None
                firing = p99 is not None and p99 >= th.lag_p99
                detail = (f"p99 lag {_fmt_s(p99)} over the last {span} ({int(count)} documents; threshold "
                          f"{_fmt_s(th.lag_p99)})" if p99 is not None else f"no documents written in the last {span}")
                checks.append(Check("lag", target, firing, p99, th.lag_p99, detail))
        if th.dead_letters is not None:
            if dead is None:
                checks.append(Check("dead_letters", target, None, None, th.dead_letters,
                                    "dead-letter store unreachable"))
            else:
                n = dead.get(("materialize", target), 0)
                checks.append(Check("dead_letters", target, n >= th.dead_letters, float(n), th.dead_letters,
                                    f"{n} dead letter(s) pending (threshold {th.dead_letters}); "
                                    f"`sophia-tasks dlq list --target {target}`"))
        if th.stale_after is not None:
            last = last_written.get(target)
            if last is None:
                checks.append(Check("stale", target, False, None, th.stale_after, "never written yet"))
            else:
                age = max(0.0, now - last)
                checks.append(Check("stale", target, age > th.stale_after, round(age, 1), th.stale_after,
                                    f"no successful write for {_fmt_s(age)} (threshold {_fmt_s(th.stale_after)})"))
        if paused is not None:
            entries = paused_by_target.get(target, [])
            if entries:
                longest = max(0.0, now - min(float(e.get("since", now)) for e in entries))
                detail = (f"{len(entries)} binding(s) paused for {_fmt_s(longest)}, documents held, none lost: "
                          + "; ".join(f"{e.get('collection')}: {e.get('reason')}" for e in entries)[:1500]
                          + ". Run `sophia-tasks flows plan`, then `sophia-tasks flows apply`")
                checks.append(Check("paused", target, True, round(longest, 1), None, detail))
            # Not paused: no check at all, so the other alerts' list stays as configured; a paused alert
            # that fired is resolved as "no longer evaluated" once its binding writes again.
    if config.pipeline_dead_letters is not None:
        if dead is None:
            checks.append(Check("dead_letters", PIPELINE, None, None, config.pipeline_dead_letters,
                                "dead-letter store unreachable"))
        else:
            n = sum(v for (stage, _t), v in dead.items() if stage in ("validate", "derive"))
            checks.append(Check("dead_letters", PIPELINE, n >= config.pipeline_dead_letters, float(n),
                                config.pipeline_dead_letters,
                                f"{n} event(s) failed validation or a derivation and wait in the dead-letter "
                                f"store (threshold {config.pipeline_dead_letters}); `sophia-tasks dlq list`"))
    if config.reconcile_repaired is not None:
        span_r = _fmt_s(config.reconcile_window)
        if reconcile_baseline is None:
            checks.append(Check("reconcile", RECONCILE, None, None, config.reconcile_repaired,
                                "no earlier snapshot yet"))
        else:
            n = max(0.0, repaired_count(current) - repaired_count(reconcile_baseline))
            checks.append(Check("reconcile", RECONCILE, n > config.reconcile_repaired, n, config.reconcile_repaired,
                                f"reconciliation with Gong enqueued {int(n)} call(s) the webhook had not delivered "
                                f"(or older versions) over the last {span_r} (threshold: more than "
                                f"{config.reconcile_repaired}); `sophia-tasks reconcile --since ... --dry-run`"))
    return checks


def due(config: AlertsConfig, checks: Iterable[Check], pending: Mapping[str, float], now: float) -> set[str]:
    """Keys of the firing checks whose condition has held for their ``for`` (pending: first seen)."""
    out = set()
    for check in checks:
        if check.firing is True and now - pending.get(check.key, now) >= config.hold(check.kind, check.target):
            out.add(check.key)
    return out


def firing_message(prefix: str, check: Check) -> str:
    return f":rotating_light: {prefix} FIRING {check.kind} on {check.target}: {check.detail}"


def resolved_message(prefix: str, check: Check | None, kind: str, target: str, since: float | None,
                     now: float) -> str:
    lasted = f" after {_fmt_s(now - since)}" if since else ""
    now_detail = f" (now: {check.detail})" if check is not None else " (no longer evaluated)"
    return f":white_check_mark: {prefix} RESOLVED {kind} on {target}{lasted}{now_detail}"


# -- state, snapshots, Slack (I/O) -----------------------------------------------------------
def _window_subset(counters: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in counters.items() if k.split("|", 1)[0] in _WINDOW_COUNTERS}


def _baseline(client: redis_lib.Redis, window: float, now: float) -> dict[str, float] | None:
    """The newest snapshot at least a window old, else the oldest one (a young service)."""
    found = client.zrevrangebyscore(SNAPSHOTS_KEY, now - window, "-inf", start=0, num=1)
    if not found:
        found = client.zrangebyscore(SNAPSHOTS_KEY, "-inf", f"({now}", start=0, num=1)
    if not found:
        return None
    return {str(k): float(v) for k, v in json.loads(found[0])["c"].items()}


def _store_snapshot(client: redis_lib.Redis, counters: Mapping[str, float], keep: float, now: float) -> None:
    """Store this evaluation's counters; drop snapshots older than ``keep`` (at least an hour)."""
    pipe = client.pipeline(transaction=False)
    pipe.zadd(SNAPSHOTS_KEY, {json.dumps({"ts": now, "c": _window_subset(counters)}): now})
    pipe.zremrangebyscore(SNAPSHOTS_KEY, "-inf", now - max(keep, 3600.0))
    pipe.execute()


def window_baseline(client: redis_lib.Redis, spec: FlowSpec, now: float) -> tuple[float | None,
                                                                                  dict[str, float] | None]:
    """(window seconds, baseline counters) for readers such as ``status``; never writes."""
    try:
        window = load_alerts_config(spec).window
    except FlowSpecError:
        return None, None
    return window, _baseline(client, window, now)


def firing_alerts(client: redis_lib.Redis) -> list[dict[str, Any]]:
    """What has been sent and not resolved, oldest first."""
    out = []
    for key, raw in client.hgetall(STATE_KEY).items():
        try:
            state = json.loads(raw)
        except ValueError:
            continue
        kind, _, target = key.decode().partition(":")
        out.append({"key": key.decode(), "kind": kind, "target": target, **state})
    return sorted(out, key=lambda a: (a.get("since") or 0, a["key"]))


def post_slack(url: str | None, text: str, timeout: float = 5.0) -> bool:
    """Post one message to a Slack incoming webhook; True when Slack took it (or none is configured)."""
    if not url:
        log.info("alert (SOPHIA_SLACK_WEBHOOK_URL not set): %s", text)
        return True
    import requests

    try:
        resp = requests.post(url, json={"text": text}, timeout=timeout)
    except requests.RequestException as exc:
        log.warning("slack unreachable: %s", type(exc).__name__)  # the URL is a credential: never log it
        return False
    if not 200 <= resp.status_code < 300:
        log.warning("slack refused the alert: HTTP %s %s", resp.status_code, resp.text[:200])
        return False
    return True


def run_checks(settings: Settings, spec: FlowSpec, now: float | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Evaluate every alert, post what fired or cleared, and answer what happened.

    ``dry_run`` evaluates only: no snapshot is stored, no state changes, nothing is posted.
    """
    now = time.time() if now is None else now
    config = load_alerts_config(spec)
    stats = Stats(settings.redis_url)
    client = stats.client
    counters = stats.counters()
    baseline = _baseline(client, config.window, now)
    reconcile_baseline = _baseline(client, config.reconcile_window, now)
    keep = max(3 * config.window, 2 * config.reconcile_window)
    if not dry_run:
        _store_snapshot(client, counters, keep, now)
    try:
        dead: dict[tuple[str, str], int] | None = pending_dead_letters(settings)
    except Exception as exc:  # psycopg2: the store is down; dead-letter alerts stay as they are
        log.warning("alerts: dead-letter store unreachable: %s", str(exc).strip().splitlines()[0] if str(exc) else exc)
        dead = None
    try:
        paused: list[dict[str, Any]] | None = paused_bindings(client, now)
    except redis_lib.RedisError as exc:
        log.warning("alerts: paused bindings unreadable: %s", exc)
        paused = None
    checks = evaluate(config, spec.materializations, now, counters, baseline, dead, stats.last_written(),
                      reconcile_baseline, paused)
    pending = {k.decode(): float(v) for k, v in client.hgetall(PENDING_KEY).items()}
    if not dry_run:
        pipe = client.pipeline(transaction=False)
        for check in checks:
            if check.firing is True and check.key not in pending:
                pipe.hsetnx(PENDING_KEY, check.key, now)
            elif check.firing is False and check.key in pending:
                pipe.hdel(PENDING_KEY, check.key)
        evaluated = {c.key for c in checks}
        for key in pending:
            if key not in evaluated:  # switched off or its target removed: a later one starts afresh
                pipe.hdel(PENDING_KEY, key)
        pipe.execute()
    ready = due(config, checks, pending, now)
    prefix = f"[sophia-tasks {Path(spec.path).stem}]"
    state = {k.decode(): v for k, v in client.hgetall(STATE_KEY).items()}
    fired: list[str] = []
    resolved: list[str] = []
    failed: list[str] = []
    by_key = {c.key: c for c in checks}
    for check in checks:
        if check.firing is True and check.key not in state:
            if check.key not in ready:
                continue  # holding for less than its `for`: not sent yet
            if dry_run:
                fired.append(check.key)
                continue
            record = json.dumps({"since": now, "value": check.value, "threshold": check.threshold,
                                 "detail": check.detail})
            if not client.hsetnx(STATE_KEY, check.key, record):
                continue  # another evaluation sent it a moment ago
            if post_slack(reveal(settings.slack_webhook_url), firing_message(prefix, check)):
                fired.append(check.key)
            else:
                client.hdel(STATE_KEY, check.key)  # not sent: the next evaluation tries again
                failed.append(check.key)
    stale_keys = [k for k in state if k not in by_key]
    for key in [c.key for c in checks if c.firing is False and c.key in state] + stale_keys:
        check = by_key.get(key)
        kind, _, target = key.partition(":")
        if dry_run:
            resolved.append(key)
            continue
        raw = state[key]
        if not client.hdel(STATE_KEY, key):
            continue  # another evaluation resolved it
        try:
            since = json.loads(raw).get("since")
        except ValueError:
            since = None
        if post_slack(reveal(settings.slack_webhook_url), resolved_message(prefix, check, kind, target, since, now)):
            resolved.append(key)
        else:
            client.hsetnx(STATE_KEY, key, raw)  # keep it firing so the resolution is sent next time
            failed.append(key)
    if dry_run:
        firing = sorted((set(state) | set(fired)) - set(resolved))
    else:
        firing = sorted(k.decode() for k in client.hkeys(STATE_KEY))
    return {
        "evaluated_at": now,
        "window_seconds": config.window,
        "baseline": baseline is not None,
        "slack": "configured" if settings.slack_webhook_url else "not configured",
        "dry_run": dry_run,
        "checks": [{"key": c.key, "kind": c.kind, "target": c.target, "firing": c.firing, "value": c.value,
                    "threshold": c.threshold, "detail": c.detail, "for_seconds": config.hold(c.kind, c.target),
                    "pending_since": pending.get(c.key, now) if c.firing and c.key not in ready else None}
                   for c in checks],
        "fired": fired,
        "resolved": resolved,
        "failed": failed,
        "firing": firing,
    }
