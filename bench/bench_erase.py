"""Wall time of erasure's journal scan (``sophia-tasks erase``): every sealed event opened and screened.

Why: sealed events cannot be searched in SQL, so an erasure reads the whole journal; its length is
what an operator waits for.

Method: a scratch database (``sophia_bench_erase``, dropped at the end) gets ``--events`` journaled
events from the fixture corpus (~5 KB each), sealed; the journal scan then runs ``--rounds`` times
for an address that is in none of them (every row opened and screened, none parsed) and once for an
address the corpus holds. Wall time per round, rows a second, and the command's own CPU per event
(the figure that holds on a busy machine; the wall time also counts PostgreSQL and the machine's load).

    .venv/bin/python bench/bench_erase.py [--events 20000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from sophia_tasks.core.addresses import AddressMatcher  # noqa: E402
from sophia_tasks.flows import load_spec  # noqa: E402
from sophia_tasks.ops.erase import Found, find_in_journal  # noqa: E402
from sophia_tasks.settings import load_settings  # noqa: E402
from sophia_tasks.store.db import connections  # noqa: E402
from sophia_tasks.store.journal import journal_rows, write_rows  # noqa: E402
from sophia_tasks.store.sealing import Sealer, new_key  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DSN = "postgresql://postgres@127.0.0.1:5432/sophia_bench_erase"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    corpus = [json.loads(line) for line in (ROOT / "tests/fixtures/gong_calls_corpus.ndjson").open()]
    key = new_key()
    settings = load_settings({"SOPHIA_POSTGRES_DSN": DSN, "SOPHIA_DATA_KEYS": key})
    spec = load_spec(settings.flow_path)
    events = [{"event_id": f"e{i}", "collection": "gong_calls", "received_at": "2026-12-02T10:00:00.000000Z",
               "published_at": "2026-12-02T10:00:00.000000Z", "source": "webhook", "is_test": False,
               "document": corpus[i % len(corpus)]} for i in range(args.events)]
    try:
        for i in range(0, len(events), 500):
            write_rows(DSN, journal_rows(events[i:i + 500], "live", sealer=Sealer([key])))
        for n in range(args.rounds):
            started, cpu = time.perf_counter(), time.process_time()
            find_in_journal(settings, spec, AddressMatcher("nobody@nowhere.example"), Found())
            took, cpu = time.perf_counter() - started, time.process_time() - cpu
            print(f"round {n + 1}: {args.events} sealed events in {took:.2f} s ({args.events / took:,.0f}/s), "
                  f"{1e6 * cpu / args.events:.0f} us of this process's CPU per event; address in none")
        present = re.search(r"[\w.+-]+@[\w-]+\.[\w.-]+", json.dumps(corpus[0]))
        if present:
            started = time.perf_counter()
            found = find_in_journal(settings, spec, AddressMatcher(present.group(0)), Found())
            print(f"an address of the corpus: {found} event(s) matched in {time.perf_counter() - started:.2f} s")
    finally:
        connections.discard(DSN)
        conn = psycopg2.connect(ADMIN)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS sophia_bench_erase")
        conn.close()


if __name__ == "__main__":
    main()
