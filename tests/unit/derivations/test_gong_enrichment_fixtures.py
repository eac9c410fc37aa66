"""The synthetic-call generator: deterministic, covering the awkward cases, and the
committed corpus is exactly what the generator produces."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.fixtures.gong_generator import generate_calls, generate_calls_with_pii

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "tests" / "fixtures" / "gong_calls_corpus.ndjson"


def test_same_seed_same_calls_other_seed_other_calls() -> None:
    assert generate_calls(30, seed=7) == generate_calls(30, seed=7)
    assert generate_calls(30, seed=7) != generate_calls(30, seed=8)
    assert len(generate_calls(0)) == 0


def test_committed_corpus_is_the_generator_output() -> None:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 200
    assert [json.loads(line) for line in lines] == generate_calls(len(lines), seed=7)


def test_corpus_covers_the_awkward_cases() -> None:
    calls, planted = generate_calls_with_pii(250, seed=7)
    for block in ("context", "parties", "content", "interaction", "collaboration", "media"):
        assert any(block not in c for c in calls), f"no call without {block}"
        assert any(block in c for c in calls), f"no call with {block}"
    assert any(c.get("parties") == [] for c in calls)
    assert any(c["metaData"]["duration"] == 0 for c in calls)
    assert any("_meta" in c for c in calls) and any("_meta" not in c for c in calls)

    by_id: dict[str, list[dict]] = {}
    for c in calls:
        by_id.setdefault(c["metaData"]["id"], []).append(c)
    repeats = [group for group in by_id.values() if len(group) > 1]
    assert any(group[0] == group[1] for group in repeats), "no exact duplicate delivery"
    assert any(any(g != group[0] for g in group[1:]) for group in repeats), "no later update of a call id"

    names = [p.get("name", "") for c in calls for p in c.get("parties") or []]
    assert any("\u4e00" <= ch <= "\u9fff" for n in names for ch in n), "no CJK name"
    assert any("\u0600" <= ch <= "\u06ff" for n in names for ch in n), "no Arabic name"
    titles = [c["metaData"]["title"] for c in calls] + [
        p.get("title") or "" for c in calls for p in c.get("parties") or []
    ]
    assert any(ord(ch) > 0xFFFF for t in titles for ch in t), "no emoji in titles"
    offsets = Counter(c["metaData"]["started"][-6:] for c in calls)
    assert len(offsets) >= 4

    free_text = json.dumps([[c.get("content", {}).get("brief"), c.get("content", {}).get("keyPoints"),
                             c.get("collaboration")] for c in calls], ensure_ascii=False)
    assert sum(e in free_text for e in planted.emails) >= 10
    assert sum(p in free_text for p in planted.phones) >= 10


def test_cli_writes_ndjson() -> None:
    result = subprocess.run([sys.executable, "-m", "tests.fixtures.gong_generator", "--count", "5", "--seed", "3"],
                            cwd=ROOT, capture_output=True, text=True, encoding="utf-8", check=True, timeout=60)
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    assert [json.loads(line) for line in lines] == generate_calls(5, seed=3)
