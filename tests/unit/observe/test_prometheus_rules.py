"""The Prometheus rules come from the spec's alerts: section: shipped file = generated, promtool accepts
them, every threshold per target is the spec's, and every metric they read is one /metrics exports."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from sophia_tasks.core.alert_rules import parse_alerts
from sophia_tasks.flows import load_spec
from sophia_tasks.observe.alerts import load_alerts_config
from sophia_tasks.observe.prometheus_rules import METRICS, prom_duration, render, rules
from sophia_tasks.settings import DEFAULT_FLOW

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "deploy" / "prometheus" / "alerts.yml"


def _generated() -> str:
    spec = load_spec(DEFAULT_FLOW)
    return render(load_alerts_config(spec), spec.materializations)


def _by(kind: str, target: str, text: str | None = None) -> dict:
    data = yaml.safe_load(text or _generated())
    found = [r for r in data["groups"][0]["rules"] if r["labels"].get("kind") == kind
             and r["labels"].get("target") == target]
    assert len(found) == 1, (kind, target, found)
    return found[0]


def test_the_shipped_rules_file_is_the_generated_one() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == _generated(), (
        "deploy/prometheus/alerts.yml differs from the rules generated from the flow spec: run "
        "`sophia-tasks alerts rules > deploy/prometheus/alerts.yml` and commit the result")


def test_promtool_accepts_the_generated_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make promtool` installs it (Debian package prometheus)"
    path = tmp_path / "alerts.yml"
    path.write_text(_generated(), encoding="utf-8")
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_thresholds_and_for_per_target_are_the_specs() -> None:
    spec = load_spec(DEFAULT_FLOW)
    config = load_alerts_config(spec)
    assert config.for_target("snowflake").lag_p99 == 900 and config.for_target("redis").lag_p99 == 300
    for target in spec.materializations:
        th = config.for_target(target)
        lag = _by("lag", target)
        assert lag["expr"].endswith(f">= {th.lag_p99:g}") and f'target="{target}"' in lag["expr"]
        assert lag["for"] == prom_duration(config.hold("lag", target))
        err = _by("error_rate", target)
        assert f">= {th.error_rate:g} and" in err["expr"] and err["expr"].endswith(f">= {th.min_errors}")
        assert _by("dead_letters", target)["expr"].endswith(f">= {th.dead_letters}")
        assert _by("stale", target)["expr"].endswith(f"> {th.stale_after:g}")
    assert _by("reconcile", "gong")["expr"].endswith(f"> {config.reconcile_repaired}")
    assert "[1h]" in _by("reconcile", "gong")["expr"] and "for" not in _by("reconcile", "gong")


def test_a_spec_change_changes_the_rules_and_off_drops_a_rule() -> None:
    spec = load_spec(DEFAULT_FLOW)
    config, problems = parse_alerts({"window": "10m", "for": "2m",
                                     "targets": {"postgres": {"lag_p99": "90s", "for": "0s", "stale_after": "off"}}},
                                    spec.materializations)
    assert problems == []
    text = render(config, spec.materializations)
    lag = _by("lag", "postgres", text)
    assert lag["expr"].endswith(">= 90") and "[10m]" in lag["expr"] and "for" not in lag
    assert _by("lag", "redis", text)["for"] == "2m"
    assert not [r for r in rules(config, spec.materializations)
                if r["labels"].get("kind") == "stale" and r["labels"]["target"] == "postgres"]


def test_every_metric_the_rules_read_is_exported_by_metrics() -> None:
    source = (ROOT / "web" / "metrics.py").read_text(encoding="utf-8")
    exprs = " ".join(r["expr"] for r in yaml.safe_load(_generated())["groups"][0]["rules"])
    used = set(re.findall(r"\b((?:estuary|sophia)_[a-z_]+)\b", exprs))
    assert used <= set(METRICS), used - set(METRICS)
    for name in used:
        family = re.sub(r"_(total|bucket)$", "", name)
        assert f'"{family}"' in source, f"{name}: no family {family!r} in web/metrics.py"


def test_prom_duration() -> None:
    assert [prom_duration(s) for s in (0, 90, 300, 900, 3600, 259200)] == ["0s", "90s", "5m", "15m", "1h", "3d"]


def test_the_command_prints_the_generated_rules(monkeypatch: Any) -> None:
    from click.testing import CliRunner

    from sophia_tasks.cli.main import main

    monkeypatch.delenv("SOPHIA_FLOW", raising=False)
    result = CliRunner().invoke(main, ["alerts", "rules"])
    assert result.exit_code == 0, result.output
    assert result.output == _generated()
