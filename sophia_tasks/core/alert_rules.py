"""The flow spec's ``alerts:`` section: thresholds per target, parsed and checked.

It lives beside the flow spec so ``flows validate`` reports a bad threshold with the
rest; ``sophia_tasks.observe.alerts`` evaluates the thresholds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


_THRESHOLD_KEYS = ("error_rate", "min_errors", "lag_p99", "dead_letters", "stale_after", "for")
_TOP_KEYS = ("window", "for", "defaults", "targets", "pipeline", "reconcile")
_RECONCILE_KEYS = ("repaired", "window", "for")

#: How long a condition must hold before its alert fires (Prometheus' ``for``), unless the spec says.
DEFAULT_FOR = 300.0


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """When one target's alerts fire; None switches that alert off."""

    error_rate: float | None = 0.05      # failed / (failed + written) documents over the window
    min_errors: int = 5                  # ...and at least this many failures (no page for one blip)
    lag_p99: float | None = 300.0        # seconds, p99 of receipt-to-materialized over the window
    dead_letters: int | None = 1         # pending dead letters of this target
    stale_after: float | None = None     # seconds without a successful write
    for_seconds: float | None = None     # the condition holds this long before it fires; None: alerts.for


@dataclass(frozen=True)
class AlertsConfig:
    window: float = 300.0
    defaults: Thresholds = field(default_factory=Thresholds)
    targets: Mapping[str, Thresholds] = field(default_factory=dict)
    pipeline_dead_letters: int | None = 1
    #: ``for`` of every alert that does not set its own (Prometheus' ``for``).
    for_seconds: float = DEFAULT_FOR
    #: Reconciliation with Gong repaired more than this many calls within ``reconcile_window``.
    reconcile_repaired: int | None = 10
    reconcile_window: float = 3600.0
    reconcile_for: float = 0.0

    def for_target(self, name: str) -> Thresholds:
        return self.targets.get(name, self.defaults)

    def hold(self, kind: str, target: str) -> float:
        """Seconds the condition of alert ``kind`` on ``target`` must hold before it fires."""
        if kind == "reconcile":
            return self.reconcile_for
        own = self.for_target(target).for_seconds if target != "pipeline" else None
        return self.for_seconds if own is None else own


def parse_duration(value: Any) -> float | None:
    """Seconds from 90, "90s", "5m", "2h", "1d"; None/"off" disable. Raises ValueError otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none", "")):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"{value!r} must be positive")
        return float(value)
    m = _DURATION.match(str(value))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a duration like 90s, 5m, 2h or 1d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_hold(value: Any) -> float:
    """A ``for`` duration: like :func:`parse_duration`, and 0 (fire at once) is allowed."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return 0.0
    if isinstance(value, str) and value.strip() in ("0", "0s", "0m"):
        return 0.0
    seconds = parse_duration(value)
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration like 0s, 90s, 5m or 2h")
    return seconds


def _thresholds(raw: Any, base: Thresholds, where: str, problems: list[str]) -> Thresholds:
    if raw is None:
        return base
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping of {', '.join(_THRESHOLD_KEYS)}")
        return base
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        here = f"{where}.{key}"
        if key not in _THRESHOLD_KEYS:
            problems.append(f"{here}: unknown threshold (known: {', '.join(_THRESHOLD_KEYS)})")
            continue
        off = value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none"))
        if key == "for":
            try:
                changes["for_seconds"] = parse_hold(value)
            except ValueError as exc:
                problems.append(f"{here}: {exc}")
        elif key == "error_rate":
            if off:
                changes[key] = None
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                problems.append(f"{here}: must be a fraction in (0, 1], e.g. 0.05 for 5%, or off")
            else:
                changes[key] = float(value)
        elif key in ("min_errors", "dead_letters"):
            if off and key == "dead_letters":
                changes[key] = None
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{here}: must be a positive integer" + (" or off" if key == "dead_letters" else ""))
            else:
                changes[key] = value
        else:
            try:
                changes[key] = parse_duration(value)
            except ValueError as exc:
                problems.append(f"{here}: {exc}")
    return replace(base, **changes)


def parse_alerts(raw: Any, targets: Iterable[str]) -> tuple[AlertsConfig, list[str]]:
    """The ``alerts:`` section as config plus every problem found (all at once, like the spec)."""
    problems: list[str] = []
    if raw is None:
        return AlertsConfig(), problems
    if not isinstance(raw, Mapping):
        return AlertsConfig(), [f"alerts: must be a mapping with {', '.join(_TOP_KEYS)}"]
    known = set(targets)
    for key in sorted(set(map(str, raw)) - set(_TOP_KEYS)):
        problems.append(f"alerts.{key}: unknown key (known: {', '.join(_TOP_KEYS)})")
    window = 300.0
    try:
        window = parse_duration(raw.get("window", "5m")) or 300.0
    except ValueError as exc:
        problems.append(f"alerts.window: {exc}")
    hold = DEFAULT_FOR
    try:
        hold = parse_hold(raw.get("for", DEFAULT_FOR))
    except ValueError as exc:
        problems.append(f"alerts.for: {exc}")
    defaults = _thresholds(raw.get("defaults"), Thresholds(), "alerts.defaults", problems)
    per: dict[str, Thresholds] = {}
    raw_targets = raw.get("targets") or {}
    if not isinstance(raw_targets, Mapping):
        problems.append("alerts.targets: must be a mapping of materialization name to thresholds")
        raw_targets = {}
    for name, conf in raw_targets.items():
        if name not in known:
            problems.append(f"alerts.targets.{name}: not a materialization of this spec")
            continue
        per[str(name)] = _thresholds(conf, defaults, f"alerts.targets.{name}", problems)
    pipeline_dl: int | None = 1
    raw_pipeline = raw.get("pipeline") or {}
    if not isinstance(raw_pipeline, Mapping):
        problems.append("alerts.pipeline: must be a mapping with dead_letters")
    else:
        for key in sorted(set(map(str, raw_pipeline)) - {"dead_letters"}):
            problems.append(f"alerts.pipeline.{key}: unknown key (known: dead_letters)")
        value = raw_pipeline.get("dead_letters", 1)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
            pipeline_dl = None
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append("alerts.pipeline.dead_letters: must be a positive integer or off")
        else:
            pipeline_dl = value
    reconcile = _reconcile(raw.get("reconcile"), problems)
    return AlertsConfig(window=window, defaults=defaults, targets=per, pipeline_dead_letters=pipeline_dl,
                        for_seconds=hold, **reconcile), problems


def _reconcile(raw: Any, problems: list[str]) -> dict[str, Any]:
    """``alerts.reconcile``: alert when reconciliation with Gong repaired more than ``repaired`` calls
    within ``window`` (a dropped-webhook storm); ``for`` defaults to 0 (one run is the evidence)."""
    out: dict[str, Any] = {}
    if raw is None:
        return out
    if not isinstance(raw, Mapping):
        problems.append(f"alerts.reconcile: must be a mapping with {', '.join(_RECONCILE_KEYS)}")
        return out
    for key in sorted(set(map(str, raw)) - set(_RECONCILE_KEYS)):
        problems.append(f"alerts.reconcile.{key}: unknown key (known: {', '.join(_RECONCILE_KEYS)})")
    if "repaired" in raw:
        value = raw["repaired"]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
            out["reconcile_repaired"] = None
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append("alerts.reconcile.repaired: must be an integer >= 0 (alert above it) or off")
        else:
            out["reconcile_repaired"] = value
    if "window" in raw:
        try:
            out["reconcile_window"] = parse_duration(raw["window"]) or 3600.0
        except ValueError as exc:
            problems.append(f"alerts.reconcile.window: {exc}")
    if "for" in raw:
        try:
            out["reconcile_for"] = parse_hold(raw["for"])
        except ValueError as exc:
            problems.append(f"alerts.reconcile.for: {exc}")
    return out


def check_alerts_section(raw: Any, targets: Iterable[str]) -> list[str]:
    """The problems of an ``alerts:`` section (``flows validate`` reports them with the rest)."""
    return parse_alerts(raw, targets)[1]
