"""CPU of sealing stored payloads at rest: the journal rows of a batch, with and without a key.

Why: every accepted event is journaled (sealed when SOPHIA_DATA_KEYS is set) before it moves on,
so the seal is paid once per event on the hot path. Dead letters are rare and pay the same per row.

Method: build journal rows for ``--events`` events (the fixture corpus, ~5 KB each) in batches of
500, ``--rounds`` times, in one process, and print the process CPU per event. Run it once with
``--key`` and once without, side by side, and compare the whole-process figures (the difference is
the seal; the start-up is the same in both).

    .venv/bin/python bench/bench_sealing.py [--events 20000] [--key]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sophia_tasks.store.journal import journal_rows  # noqa: E402
from sophia_tasks.store.sealing import Sealer, new_key  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--key", action="store_true", help="seal the journal rows (SOPHIA_DATA_KEYS set)")
    args = parser.parse_args()
    corpus = [json.loads(line) for line in (ROOT / "tests/fixtures/gong_calls_corpus.ndjson").open()]
    events = [{"event_id": f"e{i}", "collection": "gong_calls", "received_at": "2026-12-02T10:00:00.000000Z",
               "published_at": "2026-12-02T10:00:00.000000Z", "source": "webhook", "is_test": False,
               "document": corpus[i % len(corpus)]} for i in range(args.events)]
    sealer = Sealer([new_key()]) if args.key else None
    started = time.process_time()
    stored = 0
    for i in range(0, len(events), 500):
        stored += sum(len(r[7]) for r in journal_rows(events[i:i + 500], "live", sealer=sealer))
    cpu = time.process_time() - started
    print(f"{'sealed' if sealer else 'clear'}: {cpu / len(events) * 1e6:.1f} us of CPU per event in journal_rows, "
          f"{stored / len(events):.0f} bytes stored per event")


if __name__ == "__main__":
    main()
