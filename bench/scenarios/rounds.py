"""Interleaved rounds (floor, ours, floor, ours, ...) and the ratio issue #19 reads from them.

Why interleaved: on a shared virtual machine the speed drifts by tens of percent within minutes
(see "Machine speed" in docs/benchmarks.md). A floor measured once and ours measured later compare
two machines; alternating short runs and taking the median of the per-round ratios compares the
two servers on the same machine, round by round.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable

from bench.scenarios.common import log

Side = tuple[str, Callable[[], dict[str, Any]]]


def run_rounds(sides: list[Side], rounds: int, what: str) -> list[dict[str, dict[str, Any]]]:
    """Each side once per round, in the order given; one dict per round, side name -> its summary."""
    out: list[dict[str, dict[str, Any]]] = []
    for i in range(rounds):
        measured: dict[str, dict[str, Any]] = {}
        for name, run in sides:
            measured[name] = run()
        out.append(measured)
        log(f"{what}: round {i + 1}/{rounds}: " + ", ".join(
            f"{name} {m.get('accepted_per_s')}/s p99 {m.get('p99_ms')} ms" for name, m in measured.items()))
    return out


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def compare(rounds: list[dict[str, dict[str, Any]]], floors: list[str], ours: str = "ours",
            key: str = "accepted_per_s") -> dict[str, Any]:
    """The faster floor (highest median ``key`` over the rounds) and ours against it.

    ``ratio``: the median over rounds of ours / that floor in the same round (1.0: as fast as the
    floor). ``cpu_ratio``: the median of the floor's server CPU per accepted request over ours, in
    the same rounds (1.0: ours costs what the floor does). A floor that never answered is skipped.
    """
    medians = {f: _median([r[f][key] for r in rounds if f in r and r[f].get(key)]) for f in floors}
    ranked = sorted(((m, f) for f, m in medians.items() if m), reverse=True)
    if not ranked:
        return {"floor_medians": medians, "fastest_floor": None, "ratio": None, "ratios": [], "cpu_ratio": None}
    fastest = ranked[0][1]
    ratios = [r[ours][key] / r[fastest][key] for r in rounds
              if r.get(ours, {}).get(key) and r.get(fastest, {}).get(key)]
    ms = "server_cpu_ms_per_accepted"
    cpu = [r[fastest][ms] / r[ours][ms] for r in rounds if r.get(ours, {}).get(ms) and r.get(fastest, {}).get(ms)]
    return {"floor_medians": medians, "ours_median": _median([r[ours][key] for r in rounds
                                                              if r.get(ours, {}).get(key)]),
            "fastest_floor": fastest, "ratios": [round(x, 3) for x in ratios], "ratio": _median(ratios),
            "cpu_ratios": [round(x, 3) for x in cpu], "cpu_ratio": _median(cpu)}
