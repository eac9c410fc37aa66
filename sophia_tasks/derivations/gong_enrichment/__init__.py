"""The ``gong_calls_enriched`` derivation: deterministic risk/opportunity rules plus PII masking.

Why rules and not a model: the output feeds revenue-ops dashboards and alerts, so it
must be explainable (every indicator carries its evidence), reproducible (same call,
same config, same ``now`` -> same bytes) and cheap (thousands of calls per second on
one core, no network). Every keyword list and threshold lives in ``DEFAULT_CONFIG``
and can be overridden from the flow spec; ``docs/enrichment.md`` describes each rule.

Pipeline: ``derive`` -> ``enrich_call`` per document -> mask PII (``pii.py``) ->
``compute_enrichment`` on the *masked* call, so evidence and summary can never
quote an email or phone number.

Modules, each importing only those listed before it: ``defaults`` and ``values``, ``patterns``,
``config``, ``text``, ``calls``, ``rules``; this one holds the entry points.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from sophia_tasks.core.gcpause import cycle_collector_paused
from sophia_tasks.derivations.gong_enrichment.config import ResolvedConfig, resolve_config
from sophia_tasks.derivations.gong_enrichment.defaults import (
    DEFAULT_CONFIG,
    OPPORTUNITY_CODES,
    RISK_CODES,
    RULES_VERSION,
    ConfigError,
)
from sophia_tasks.derivations.gong_enrichment.rules import compute_enrichment
from sophia_tasks.derivations.gong_enrichment.values import truncate

__all__ = [
    "RULES_VERSION",
    "DEFAULT_CONFIG",
    "RISK_CODES",
    "OPPORTUNITY_CODES",
    "ConfigError",
    "ResolvedConfig",
    "resolve_config",
    "derive",
    "enrich_call",
    "compute_enrichment",
    "truncate",
]


def _timestamp(now: datetime | None) -> str:
    """ISO-8601 UTC with milliseconds and a Z; a naive ``now`` is taken as UTC."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _enrich(call: Mapping[str, Any], cfg: ResolvedConfig, enriched_at: str) -> dict[str, Any]:
    if type(call) is not dict and not isinstance(call, Mapping):  # (typing.Mapping's check is slow)
        raise TypeError(f"a Gong call must be a mapping, got {type(call).__name__}")
    masked = cfg.masker.mask_document(call)
    masked.pop("enrichment", None)  # a re-run replaces, never merges with, an old enrichment
    masked["enrichment"] = compute_enrichment(masked, cfg, enriched_at)
    return masked


def enrich_call(call: dict[str, Any], config: ResolvedConfig, now: datetime) -> dict[str, Any]:
    """One enriched document: a masked deep copy of ``call`` plus its ``enrichment``.

    ``config`` may also be a plain mapping (merged over DEFAULT_CONFIG like in ``derive``).
    """
    return _enrich(call, resolve_config(config), _timestamp(now))


def derive(documents: list[dict[str, Any]], config: Mapping[str, Any] | None = None,
           now: datetime | None = None) -> list[dict[str, Any]]:
    """Batch entry point: returns one enriched document per input document, same order.

    Each output is a masked deep copy of the input (``_meta`` kept verbatim, ``media``
    dropped) plus ``enrichment``; inputs are never mutated. ``now`` (default: the
    current UTC time) becomes ``enrichment.enriched_at`` for the whole batch.
    """
    cfg = resolve_config(config)
    enriched_at = _timestamp(now)
    with cycle_collector_paused():  # sophia_tasks.core.gcpause: ~13% of derive's CPU otherwise
        return [_enrich(doc, cfg, enriched_at) for doc in documents]
