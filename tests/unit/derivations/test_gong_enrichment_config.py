"""Config of gong_calls_enriched: merged over DEFAULT_CONFIG, validated once, cached, documented."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sophia_tasks.derivations.gong_enrichment.config import ResolvedConfig, resolve_config
from sophia_tasks.derivations.gong_enrichment.defaults import DEFAULT_CONFIG, RISK_CODES, ConfigError
from tests.fixtures.gong_builders import enrich, quiet_call, risk_codes

DOCS = Path(__file__).resolve().parents[3] / "docs" / "enrichment.md"


def test_defaults_resolve_and_are_cached() -> None:
    cfg = resolve_config(None)
    assert isinstance(cfg, ResolvedConfig)
    assert resolve_config({}) is cfg
    assert resolve_config(cfg) is cfg
    assert resolve_config({"short_call_seconds": 120}) is resolve_config({"short_call_seconds": 120})
    assert resolve_config({"short_call_seconds": 120}) is not cfg


def test_partial_config_keeps_other_defaults() -> None:
    cfg = resolve_config({"short_call_seconds": 120, "severity_weights": {"high": 40}})
    assert cfg.short_call_seconds == 120
    assert cfg.long_monologue_seconds == DEFAULT_CONFIG["long_monologue_seconds"]
    assert cfg.weight["no_next_steps"] == 40  # high
    assert cfg.weight["short_call"] == 5  # low, untouched


def test_lists_replace_defaults() -> None:
    call = quiet_call()
    call["content"]["brief"] = "They also use Clari"
    assert "competitor_mentioned" in risk_codes(enrich(call))
    assert "competitor_mentioned" not in risk_codes(enrich(call, {"competitors": ["Gong Rival"]}))


def test_default_config_is_not_mutated_by_merging() -> None:
    before = repr(DEFAULT_CONFIG)
    resolve_config({"severity_weights": {"low": 1}, "competitors": ["X"], "risk_severities": {"short_call": "high"}})
    assert repr(DEFAULT_CONFIG) == before


@pytest.mark.parametrize("config, message", [
    ({"short_call_secs": 10}, "unknown config key"),
    ({"short_call_seconds": "ten"}, "short_call_seconds: must be a number"),
    ({"short_call_seconds": True}, "short_call_seconds: must be a number"),
    ({"rep_dominated_talk_ratio": 1.5}, "between"),
    ({"multi_threaded_min_external_parties": 2.5}, "must be an integer"),
    ({"summary_max_chars": 900}, "summary_max_chars"),
    ({"competitors": "Clari"}, "competitors: must be a list of strings"),
    ({"competitors": ["Clari", ""]}, "non-empty string"),
    ({"next_step_keywords": ["*"]}, "non-empty string"),
    ({"severity_weights": {"critical": 50}}, "severity_weights"),
    ({"severity_weights": {"high": -1}}, "severity_weights.high"),
    ({"severity_weights": [1, 2]}, "must be a mapping"),
    ({"risk_severities": {"short_call": "urgent"}}, "risk_severities.short_call"),
    ({"risk_severities": {"made_up": "low"}}, "unknown risk code"),
    ({"pii_phone_keep_last_digits": 4}, "pii_phone_keep_last_digits"),
])
def test_invalid_config_names_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config(config)


def test_config_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError):
        resolve_config(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_risk_severities_cover_every_risk() -> None:
    assert set(DEFAULT_CONFIG["risk_severities"]) == set(RISK_CODES)


def test_config_round_trips_through_yaml() -> None:
    # the flow spec is YAML: the documented block must load back to DEFAULT_CONFIG
    text = yaml.safe_dump(DEFAULT_CONFIG, allow_unicode=True, sort_keys=False)
    assert resolve_config(yaml.safe_load(text)) is resolve_config(DEFAULT_CONFIG)


def test_docs_describe_every_config_key() -> None:
    doc = DOCS.read_text(encoding="utf-8")
    missing = [key for key in DEFAULT_CONFIG if f"`{key}`" not in doc]
    assert missing == []


def test_docs_yaml_block_is_exactly_the_default_config() -> None:
    doc = DOCS.read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(derivations:\n.*?)```", doc, re.DOTALL)
    assert block is not None
    spec = yaml.safe_load(block.group(1))
    assert spec["derivations"]["gong_calls_enriched"]["config"] == DEFAULT_CONFIG
