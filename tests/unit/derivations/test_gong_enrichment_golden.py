"""Golden tests: hand-written calls in tests/fixtures/golden/ with hand-written expectations.

Codes, scores, summaries, action order and metrics are compared exactly (with the
file's fixed ``now``); evidence by exact text or by a quoted fragment; masking by
JSON pointer. A change of rules that moves any of these must update the file.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sophia_tasks.derivations.gong_enrichment import derive
from sophia_tasks.derivations.gong_enrichment.defaults import RULES_VERSION

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden"
FILES = sorted(GOLDEN.glob("*.json"))

_MISSING = object()


def _pointer(document: Any, pointer: str) -> Any:
    """RFC 6901 lookup; _MISSING when a step does not exist (None is a real value here)."""
    node = document
    for raw in pointer.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _run(golden: dict[str, Any]) -> dict[str, Any]:
    now = datetime.fromisoformat(golden["now"].replace("Z", "+00:00"))
    return derive([golden["call"]], golden.get("config"), now)[0]


def test_golden_files_exist() -> None:
    assert len(FILES) >= 8


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden(path: Path) -> None:
    golden = json.loads(path.read_text(encoding="utf-8"))
    expected = golden["expected"]
    out = _run(golden)
    e = out["enrichment"]

    assert e["risk_score"] == expected["risk_score"]
    assert [r["code"] for r in e["risk_indicators"]] == expected["risk_codes"]
    assert [o["code"] for o in e["opportunities"]] == expected["opportunity_codes"]
    assert e["executive_summary"] == expected["executive_summary"]
    assert [{"code": a["reason"].split(":", 1)[0], "priority": a["priority"]}
            for a in e["next_best_actions"]] == expected["next_best_actions"]
    assert e["metrics"] == expected["metrics"]
    assert e["rules_version"] == RULES_VERSION
    assert e["enriched_at"] == golden["now"].replace("Z", ".000Z")

    severity = {r["code"]: r["severity"] for r in e["risk_indicators"]}
    for code, want in expected.get("severities", {}).items():
        assert severity[code] == want, code
    evidence = {item["code"]: item["evidence"] for item in e["risk_indicators"] + e["opportunities"]}
    for code, want in expected.get("evidence_equals", {}).items():
        assert evidence[code] == want, code
    for code, fragment in expected.get("evidence_contains", {}).items():
        assert fragment in evidence[code], code

    for pointer, want in expected.get("masked", {}).items():
        assert _pointer(out, pointer) == want, pointer
    for key in expected.get("absent_keys", []):
        assert key not in out
    dumped = json.dumps(out, ensure_ascii=False)
    for raw in expected.get("absent_text", []):
        assert raw not in dumped, raw
    dumped_without_meta = json.dumps({k: v for k, v in out.items() if k != "_meta"}, ensure_ascii=False)
    for raw in expected.get("absent_text_outside_meta", []):
        assert raw not in dumped_without_meta, raw


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_input_is_not_mutated(path: Path) -> None:
    golden = json.loads(path.read_text(encoding="utf-8"))
    before = json.dumps(golden["call"], sort_keys=True)
    _run(golden)
    assert json.dumps(golden["call"], sort_keys=True) == before
