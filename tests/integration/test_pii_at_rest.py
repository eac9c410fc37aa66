"""PII at rest: no email of the sample calls in clear in any table of the service's database, and
`keys rotate` seals every stored payload again under a new key (and back)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from psycopg2 import sql

from sophia_tasks.store.sealing import new_key
from tests.integration.conftest import DATA_KEY, Harness, gong_call
from tests.integration.test_pipeline import envelope, landed_everywhere

SOPHIA = str(Path(sys.executable).parent / "sophia-tasks")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def sample_calls() -> list[dict[str, Any]]:
    raw = resources.files("sophia_tasks").joinpath("samples/gong_calls.json").read_text(encoding="utf-8")
    calls = json.loads(raw)
    for call in calls:  # fresh ids: this test's rows, not an earlier test's
        call["metaData"]["id"] = str(uuid.uuid4().int % 10**18)
    return calls


def every_table_as_text(harness: Harness) -> dict[str, str]:
    conn = harness.pg()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                        "AND table_type = 'BASE TABLE'")
            tables = sorted(name for (name,) in cur.fetchall())
            out = {}
            for table in tables:
                cur.execute(sql.SQL("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {} t")
                            .format(sql.Identifier(table)))
                out[table] = str(cur.fetchone()[0])
            return out
    finally:
        conn.close()


def run(harness: Harness, keys: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SOPHIA, *argv], env=dict(harness.env, SOPHIA_DATA_KEYS=keys), capture_output=True,
                          text=True, timeout=300)


def test_no_sample_email_in_clear_in_any_table_and_keys_rotate(harness: Harness) -> None:
    calls = sample_calls()
    emails = sorted(set(EMAIL.findall(json.dumps(calls))))
    assert len(emails) >= 5
    bad = gong_call(title=12345)  # schema-invalid: a dead letter that carries a party's email
    bad["parties"][0]["emailAddress"] = emails[0]
    assert harness.post([envelope(c) for c in calls]).status_code == 202
    assert harness.post(envelope(bad)).status_code == 202
    for call in calls:
        harness.wait(lambda call=call: landed_everywhere(harness, call["metaData"]["id"]), 60, "the sample calls")
    (letter,) = harness.wait(lambda: harness.dead_letters(document_key=bad["metaData"]["id"]), 60, "the letter")
    assert letter["payload"]["document"]["parties"][0]["emailAddress"] == emails[0]  # opened, it is all there

    tables = every_table_as_text(harness)
    assert {"sophia_journal", "sophia_dead_letters", "gong_calls_enriched"} <= {t.split("_p2")[0] for t in tables}
    assert any(calls[0]["metaData"]["id"] in text for text in tables.values())  # the calls are there...
    leaks = [f"{email} in {table}" for table, text in tables.items() for email in emails if email in text]
    assert leaks == []  # ...and no email in clear, whatever the table

    new = new_key()
    try:
        rotated = run(harness, f"{new},{DATA_KEY}", "keys", "rotate", "--json")
        assert rotated.returncode == 0, rotated.stderr
        counts = {r["store"]: r for r in json.loads(rotated.stdout)}
        assert counts["journal"]["resealed"] >= len(calls) and counts["dead letters"]["resealed"] >= 1
        again = run(harness, f"{new},{DATA_KEY}", "keys", "rotate", "--json")
        assert all(r["resealed"] == 0 for r in json.loads(again.stdout)), again.stdout  # nothing left to do
        shown = run(harness, new, "dlq", "show", str(letter["id"]))
        assert shown.returncode == 0 and emails[0] in shown.stdout, shown.stderr  # the new key alone opens it
        refused = run(harness, DATA_KEY, "dlq", "show", str(letter["id"]))
        assert refused.returncode == 1 and "no key of SOPHIA_DATA_KEYS opens" in refused.stderr
        assert emails[0] not in refused.stdout + refused.stderr
    finally:  # back under the stack's key, for the tests after this one and the worker
        back = run(harness, f"{DATA_KEY},{new}", "keys", "rotate")
        assert back.returncode == 0, back.stderr
    assert harness.dead_letters(document_key=bad["metaData"]["id"])[0]["payload"] == letter["payload"]
