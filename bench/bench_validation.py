"""CPU of validating one document: a JSON Schema collection against the marshmallow fast path.

Why: a collection declared with a JSON Schema in the flow spec is checked by the ``jsonschema`` package
(Draft202012Validator) on the validate stage's hot path, where Gong calls take the compiled marshmallow
fast path (``sophia_tasks.schemas.fast``). This measures what a document costs either way.

Method: the validators the worker uses (``Collection.validator`` of the shipped spec), each over its
documents (the sample deals for ``hubspot_deals``; the sample calls and the 5 KB corpus calls for
``gong_calls``; the deals also through ``jsonschema`` alone, without the compiled accept-check), ``--n``
validations per timed run, runs interleaved (deals, deals alone, calls, corpus, deals, ...)
``--rounds`` times in one process; the median run per variant is printed in microseconds per document.

    .venv/bin/python bench/bench_validation.py [--rounds 15] [--n 20000]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sophia_tasks.flows import load_spec  # noqa: E402
from sophia_tasks.schemas.json_schema import compile_validator  # noqa: E402
from sophia_tasks.settings import DEFAULT_FLOW  # noqa: E402


def _run(validate: Callable[[Any], Any], docs: list[Any], n: int) -> float:
    """Microseconds per document over ``n`` validations; every one must pass."""
    k = len(docs)
    started = time.perf_counter()
    for i in range(n):
        _, errors = validate(docs[i % k])
        if errors:
            raise SystemExit(f"a benchmark document is invalid: {errors}")
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    spec = load_spec(DEFAULT_FLOW)
    deals = json.loads((ROOT / "sophia_tasks/samples/hubspot_deals.json").read_text())
    calls = json.loads((ROOT / "sophia_tasks/samples/gong_calls.json").read_text())
    corpus = [json.loads(line) for line in (ROOT / "tests/fixtures/gong_calls_corpus.ndjson").open()][:200]
    deal_schema = spec.collections["hubspot_deals"].json_schema
    assert deal_schema is not None
    variants = {
        "hubspot_deals, JSON Schema with its fast check (sample deals)": (spec.collections["hubspot_deals"].validator,
                                                                          deals),
        "hubspot_deals, jsonschema alone (sample deals)": (compile_validator(deal_schema, fast=False), deals),
        "gong_calls, marshmallow fast path (sample calls)": (spec.collections["gong_calls"].validator, calls),
        "gong_calls, marshmallow fast path (corpus calls)": (spec.collections["gong_calls"].validator, corpus),
    }
    for validate, docs in variants.values():  # warm up: caches, compiled regexes
        _run(validate, docs, 2000)
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (validate, docs) in variants.items():
            timings[name].append(_run(validate, docs, args.n))
    for name, (_, docs) in variants.items():
        size = statistics.mean(len(json.dumps(d)) for d in docs)
        runs = sorted(timings[name])
        print(f"{name}: median {statistics.median(runs):.1f} us/document (runs {runs[0]:.1f}-{runs[-1]:.1f}), "
              f"{size / 1024:.1f} KB/document")


if __name__ == "__main__":
    main()
