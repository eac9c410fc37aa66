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


_THRESHOLD_KEYS = ("error_rate", "min_errors", "lag_p99", "dead_letters", "stale_after")


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """When one target's alerts fire; None switches that alert off."""

    error_rate: float | None = 0.05      # failed / (failed + written) documents over the window
    min_errors: int = 5                  # ...and at least this many failures (no page for one blip)
    lag_p99: float | None = 300.0        # seconds, p99 of receipt-to-materialized over the window
    dead_letters: int | None = 1         # pending dead letters of this target
    stale_after: float | None = None     # seconds without a successful write


@dataclass(frozen=True)
class AlertsConfig:
    window: float = 300.0
    defaults: Thresholds = field(default_factory=Thresholds)
    targets: Mapping[str, Thresholds] = field(default_factory=dict)
    pipeline_dead_letters: int | None = 1

    def for_target(self, name: str) -> Thresholds:
        return self.targets.get(name, self.defaults)


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
        if key == "error_rate":
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
        return AlertsConfig(), ["alerts: must be a mapping with window, defaults, targets, pipeline"]
    known = set(targets)
    for key in sorted(set(map(str, raw)) - {"window", "defaults", "targets", "pipeline"}):
        problems.append(f"alerts.{key}: unknown key (known: window, defaults, targets, pipeline)")
    window = 300.0
    try:
        window = parse_duration(raw.get("window", "5m")) or 300.0
    except ValueError as exc:
        problems.append(f"alerts.window: {exc}")
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
    return AlertsConfig(window=window, defaults=defaults, targets=per, pipeline_dead_letters=pipeline_dl), problems


def check_alerts_section(raw: Any, targets: Iterable[str]) -> list[str]:
    """The problems of an ``alerts:`` section (``flows validate`` reports them with the rest)."""
    return parse_alerts(raw, targets)[1]
