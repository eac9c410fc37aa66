"""The config, merged over ``DEFAULT_CONFIG``, validated and compiled once per distinct config
(cached on its canonical JSON), so a batch never pays for the regexes per call."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from sophia_tasks.derivations.gong_enrichment.defaults import (
    _CODE_ORDER,
    _SIGNALS,
    DEFAULT_CONFIG,
    RISK_CODES,
    SEVERITIES,
    ConfigError,
)
from sophia_tasks.derivations.gong_enrichment.patterns import _compile_keywords, _scan_regex
from sophia_tasks.derivations.gong_enrichment.values import _fmt
from sophia_tasks.derivations.pii import PiiMasker

_KEYWORD_LIST_KEYS: tuple[str, ...] = tuple(
    k for k, v in DEFAULT_CONFIG.items() if isinstance(v, list)
)


@dataclass(frozen=True)
class Signal:
    """A text signal: a compiled keyword pattern plus tracker-name keywords."""

    name: str
    pattern: re.Pattern[str] | None
    tracker_keywords: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedConfig:
    """The merged, validated config with regexes compiled once (it is cached per distinct config)."""

    values: Mapping[str, Any]
    scan_pattern: re.Pattern[str] | None  # every text keyword of every signal, as one trie, lower-case
    scan_keywords: tuple[str, ...]  # for the case-insensitive scanner, compiled on first need
    match_cache: dict[str, tuple[tuple[str, ...], str | None]]  # matched text -> (signals, competitor)
    tracker_cache: dict[tuple[str, str], tuple[str, ...]]  # a tracker's (name, type) -> its signals
    rep_dominated_talk_ratio: float
    long_monologue_seconds: float
    short_call_seconds: float
    threshold_labels: Mapping[str, str]  # the three thresholds above as evidence shows them ("0.65", "150")
    multi_threaded_min_external_parties: int
    summary_max_chars: int
    summary_max_key_points: int
    summary_max_risks: int
    severity: Mapping[str, str]
    weight: Mapping[str, int]
    competitor_pattern: re.Pattern[str] | None
    competitor_names: Mapping[str, str]  # lower-cased -> configured spelling
    competitor_tracker_keywords: tuple[str, ...]
    signals: Mapping[str, Signal]
    senior_title_pattern: re.Pattern[str] | None
    senior_title_scan: re.Pattern[str] | None  # senior_title_pattern as a trie scanner: same titles, faster
    senior_title_exclude_pattern: re.Pattern[str] | None
    risk_order: Mapping[str, tuple[int, int]]  # risk code -> its rank among the summary's top risks
    risk_labels: Mapping[str, str]  # risk code -> "pricing objection (medium)" for the summary
    negative_outcomes: frozenset[str]
    timeline_context_fields: frozenset[str]
    masker: PiiMasker


def _merge(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Overlay ``config`` on DEFAULT_CONFIG; nested mappings merge one level, lists replace."""
    merged: dict[str, Any] = {
        k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
        for k, v in DEFAULT_CONFIG.items()
    }
    if config is None:
        return merged
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    unknown = sorted(str(k) for k in config if k not in DEFAULT_CONFIG)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(sorted(DEFAULT_CONFIG))}")
    for key, value in config.items():
        if isinstance(DEFAULT_CONFIG[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: must be a mapping")
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def _number(merged: Mapping[str, Any], key: str, low: float, high: float, integer: bool = False) -> Any:
    value = merged[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(f"{key}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low:g} and {high:g}, got {value!r}")
    return int(value) if integer else float(value)


def _strings(merged: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = merged[key]
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: must be a list of strings")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip() or item.strip() == "*":
            raise ConfigError(f"{key}: every item must be a non-empty string, got {item!r}")
        out.append(item.strip())
    return tuple(out)


def _build(merged: dict[str, Any]) -> ResolvedConfig:
    """Validate every key of the merged config and compile its patterns."""
    for key in _KEYWORD_LIST_KEYS:
        merged[key] = list(_strings(merged, key))
    weights = merged["severity_weights"]
    if set(weights) != set(SEVERITIES):
        raise ConfigError(f"severity_weights: keys must be exactly {', '.join(SEVERITIES)}")
    weight_of = {}
    for sev in SEVERITIES:
        w = weights[sev]
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100:
            raise ConfigError(f"severity_weights.{sev}: must be an integer 0-100, got {w!r}")
        weight_of[sev] = w
    severity = merged["risk_severities"]
    for code, sev in severity.items():
        if code not in RISK_CODES:
            raise ConfigError(f"risk_severities.{code}: unknown risk code; known: {', '.join(RISK_CODES)}")
        if sev not in SEVERITIES:
            raise ConfigError(f"risk_severities.{code}: must be one of {', '.join(SEVERITIES)}, got {sev!r}")

    competitors = merged["competitors"]
    scan_keywords = list(competitors)
    for name in _SIGNALS:
        scan_keywords += merged[f"{name}_keywords"]
    signals = {
        name: Signal(name, _compile_keywords(merged[f"{name}_keywords"]),
                     tuple(k.lower() for k in merged[f"{name}_tracker_keywords"]))
        for name in _SIGNALS
    }
    keep = _number(merged, "pii_phone_keep_last_digits", 0, 2, integer=True)
    talk_ratio = _number(merged, "rep_dominated_talk_ratio", 0.0, 1.0)
    monologue = _number(merged, "long_monologue_seconds", 0, 86400)
    short_call = _number(merged, "short_call_seconds", 0, 86400)
    return ResolvedConfig(
        values=merged,
        scan_pattern=_scan_regex(scan_keywords),
        scan_keywords=tuple(scan_keywords),
        match_cache={},
        tracker_cache={},
        rep_dominated_talk_ratio=talk_ratio,
        long_monologue_seconds=monologue,
        short_call_seconds=short_call,
        threshold_labels={"rep_dominated": f"{talk_ratio:.2f}", "long_monologue": _fmt(monologue),
                          "short_call": _fmt(short_call)},
        multi_threaded_min_external_parties=_number(merged, "multi_threaded_min_external_parties", 1, 1000,
                                                    integer=True),
        summary_max_chars=_number(merged, "summary_max_chars", 100, 600, integer=True),
        summary_max_key_points=_number(merged, "summary_max_key_points", 0, 20, integer=True),
        summary_max_risks=_number(merged, "summary_max_risks", 0, len(RISK_CODES), integer=True),
        severity=dict(severity),
        weight={code: weight_of[severity[code]] for code in RISK_CODES},
        competitor_pattern=_compile_keywords(competitors),
        competitor_names={c.lower(): c for c in competitors},
        competitor_tracker_keywords=tuple(k.lower() for k in merged["competitor_tracker_keywords"]),
        signals=signals,
        senior_title_pattern=_compile_keywords(merged["senior_title_keywords"]),
        senior_title_scan=_scan_regex(merged["senior_title_keywords"], re.IGNORECASE, as_written=True),
        senior_title_exclude_pattern=_compile_keywords(merged["senior_title_exclude_keywords"]),
        risk_order={code: (-weight_of[severity[code]], _CODE_ORDER[code]) for code in RISK_CODES},
        risk_labels={code: f"{code.replace('_', ' ')} ({severity[code]})" for code in RISK_CODES},
        negative_outcomes=frozenset(c.casefold() for c in merged["negative_outcome_categories"]),
        timeline_context_fields=frozenset(f.casefold() for f in merged["timeline_context_fields"]),
        masker=PiiMasker(merged["pii_email_fields"], merged["pii_phone_fields"], keep),
    )


@lru_cache(maxsize=64)
def _resolve_canonical(canonical: str) -> ResolvedConfig:
    return _build(_merge(json.loads(canonical)))


def resolve_config(config: Mapping[str, Any] | ResolvedConfig | None = None) -> ResolvedConfig:
    """Merge over DEFAULT_CONFIG, validate and compile; cached on the config's canonical JSON
    so a batch pays for the regexes once per distinct config, not per call."""
    if isinstance(config, ResolvedConfig):
        return config
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    try:
        canonical = json.dumps(dict(config or {}), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config must be plain YAML/JSON data: {exc}") from None
    return _resolve_canonical(canonical)
